// Browser test of the web UI (issue 6), run by .ci/run (not by `cargo test`: it needs Chromium).
//
// Starts the real server on port 0 with a fresh database, records a run whose system prompt
// carries a <script> and whose event carries <img src=x onerror=alert(1)>, plus a blocked
// check; opens the run page in headless Chromium and asserts that the blocked check and its
// reasoning are visible, that the hostile text is shown as text and runs nothing, that new
// checks appear without a reload, that a bidi override in a tool name is written out, that
// arguments with a key sent twice show it twice, that the runs list offers older runs past its
// first 100, and saves a screenshot.
//
// usage: node tests/ui/run-page.mjs RUNWARDEN_BINARY SCREENSHOT.png
// env:   PLAYWRIGHT_DIR (where playwright-core is installed), CHROMIUM (default /usr/bin/chromium)
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [binary, screenshot] = process.argv.slice(2);
const require = createRequire(join(process.env.PLAYWRIGHT_DIR || ".", "noop.js"));
const { chromium } = require("playwright-core");

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
}

const dir = mkdtempSync(join(tmpdir(), "rw-ui-"));
const server = spawn(binary, ["serve", "--addr", "127.0.0.1:0", "--db", join(dir, "rw.db")], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, RUST_LOG: "warn" },
});
const firstLine = await new Promise((resolve) => createInterface({ input: server.stdout }).once("line", resolve));
const base = firstLine.match(/http:\/\/[0-9.:]+/)[0];

async function post(path, body) {
  const r = await fetch(base + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const json = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

let browser;
try {
  const prompt = "You are a build assistant.\n<script>window.__pwned = 'prompt'</script>";
  const { trace_id } = await post("/v1/register-agent-run", { agent_id: "coder-ui-test", timestamp: "2024-01-15T14:30:45.123Z", system_prompt: prompt });
  await post("/v1/event", { event_type: "user", trace_id, timestamp: 1705329046, content: JSON.stringify({ message: "clean the build" }), schema: "{}" });
  await post("/v1/event", { event_type: "tool", trace_id, timestamp: 1705329047, content: JSON.stringify({ html: "<img src=x onerror=alert(1)>" }), schema: "{}" });
  const schema = JSON.stringify({ type: "function", name: "run_command", parameters: { type: "object", properties: { command: { type: "string" } } } });
  const blocked = await post("/v1/check", { event_type: "action_check", trace_id, timestamp: 1705329048, content: JSON.stringify({ command: "rm -rf / --no-preserve-root" }), schema });
  await post("/v1/check", { event_type: "action_check", trace_id, timestamp: 1705329049, content: JSON.stringify({ command: "rm -rf ./build" }), schema });
  if (blocked.is_safe) fail("the rm -rf / check was expected to block");

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const dialogs = [];
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(`${base}/#/runs/${trace_id}`);
  await page.waitForSelector("li.check.blocked", { timeout: 10000 });

  const reasoning = await page.textContent("li.check.blocked .reasoning");
  if (!reasoning || !reasoning.startsWith("run_command: ")) fail(`blocked reasoning not shown: ${reasoning}`);
  if (!(await page.isVisible("li.check.blocked"))) fail("the blocked check is not visible");
  const promptText = await page.textContent("#prompt");
  if (!promptText.includes("<script>window.__pwned = 'prompt'</script>")) fail(`the prompt is not shown as text: ${promptText}`);
  // Open every collapsed content so the hostile event is on screen.
  await page.$$eval("details", (ds) => ds.forEach((d) => { d.open = true; }));
  const timeline = await page.textContent("#timeline");
  if (!timeline.includes("<img src=x onerror=alert(1)>")) fail("the <img> event is not shown as text");
  const images = await page.$$eval("main img", (imgs) => imgs.length);
  if (images !== 0) fail(`${images} <img> elements were created from agent text`);
  const scripts = await page.$$eval("script", (s) => s.length);
  if (scripts !== 1) fail(`expected only the page's own script, found ${scripts}`);
  await page.waitForTimeout(500);
  if (dialogs.length) fail(`a dialog opened: ${dialogs.join(", ")}`);
  if (await page.evaluate(() => window.__pwned)) fail("agent text ran as script");
  const csp = (await fetch(base + "/")).headers.get("content-security-policy") || "";
  if (!csp.includes("script-src 'self'")) fail(`weak or missing CSP: ${csp}`);

  // Live refresh: a new check appears without a reload.
  await post("/v1/check", { event_type: "action_check", trace_id, timestamp: 1705329050, content: JSON.stringify({ command: "ls -la" }), schema });
  await page.waitForFunction(() => document.querySelectorAll("#timeline > li").length === 5, null, { timeout: 10000 })
    .catch(() => fail("the run page did not pick up a new check"));

  // A tool name with a right-to-left override shows the override, not reversed text.
  const bidiSchema = JSON.stringify({ type: "function", name: "safe_tool\u202Egnp.exe", parameters: { type: "object" } });
  await post("/v1/check", { event_type: "action_check", trace_id, timestamp: 1705329051, content: "{}", schema: bidiSchema });
  await page.waitForFunction(() => document.querySelectorAll("#timeline > li").length === 6, null, { timeout: 10000 })
    .catch(() => fail("the run page did not pick up the check with a bidi tool name"));
  const shown = await page.textContent("#timeline");
  if (shown.includes("\u202E") || !shown.includes("safe_tool\\u{202E}gnp.exe")) fail("a bidi override in a tool name is not written out");

  // Arguments with a key sent twice are shown as sent (the browser's parser would keep one).
  const twice = await post("/v1/check", { event_type: "action_check", trace_id, timestamp: 1705329052, content: '{"command":"rm -rf /","command":"ls"}', schema });
  if (twice.is_safe) fail("a check with a key sent twice was expected to block");
  await page.waitForFunction(() => document.querySelectorAll("#timeline > li").length === 7, null, { timeout: 10000 })
    .catch(() => fail("the run page did not pick up the check with a key sent twice"));
  const args = await page.textContent("#timeline > li:last-child pre");
  if (!args.includes('"command": "rm -rf /"') || !args.includes('"command": "ls"')) fail(`a key sent twice is not shown twice: ${args}`);

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
  // The runs list shows the run with its blocked count (rm -rf / and the key sent twice).
  await page.goto(`${base}/#/`);
  await page.waitForSelector("td.blocked", { timeout: 10000 });
  if ((await page.textContent("td.blocked")).trim() !== "2") fail("the runs list does not show 2 blocked checks");
  // The runs list shows 100 runs, then older ones on request.
  for (let i = 0; i < 100; i++) {
    await post("/v1/register-agent-run", { agent_id: `bulk-${i}`, timestamp: "2024-01-15T14:30:45.123Z", system_prompt: "p" });
  }
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll("tbody tr").length === 100, null, { timeout: 10000 })
    .catch(() => fail("the runs list does not show its first 100 runs"));
  await page.click("button.more");
  await page.waitForFunction(() => document.querySelectorAll("tbody tr").length === 101, null, { timeout: 10000 })
    .catch(() => fail("Older runs did not add the 101st run"));
  if (!(await page.isHidden("button.more"))) fail("Older runs is still offered after the last run");
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (browser) await browser.close();
  server.kill();
}
console.log(process.exitCode ? "ui test failed" : "1 passed, 0 failed");
