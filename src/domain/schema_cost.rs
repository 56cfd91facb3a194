//! What validating content against a JSON Schema can cost, known before validating it.
//!
//! jsonschema validates by walking the schema and the content together: its work is the number
//! of (subschema, content node) pairs it evaluates, and a small schema can make that number
//! huge. `anyOf` branches that `$ref` one definition double it at each level of definitions (a
//! 1.5 KB schema of 22 such levels took 29 s and 6 GB against the content `5`); a recursive
//! schema with two branches doubles it at each level of nesting of the content; and
//! `{"items": {"anyOf": [1,000 branches]}}` multiplies the branches by the items.
//!
//! So a compiled schema also knows, for each depth of content, the most evaluations that one
//! content node at that depth can receive: every branch followed as if each failed, every
//! `$ref` followed to what it names, each subschema weighed by its keywords (a `required` list,
//! an `enum`, `multipleOf`'s arithmetic). [`SchemaCost::work`] weighs that with the nodes of a
//! content per depth: a bound of the work of validating it, found in time linear in the
//! content. A schema that applies itself to the same content node for ever (a `$ref` loop that
//! never descends into the content) has no bound and is refused.

use std::collections::HashMap;

use referencing::{Draft, Registry, Resolver, uri};
use serde_json::Value;

/// How deep content can be: its depths are `0..DEPTHS` (serde_json's limit of 128 nested
/// arrays and objects, and a value inside the innermost).
pub const DEPTHS: usize = 129;

/// Bytes of a string that cost one evaluation (`pattern`, `format` and the length keywords
/// read the whole string).
const STRING_BYTES_PER_EVALUATION: u64 = 64;

/// Bytes of a keyword's value (a `required` list, an `enum`, a `const`) that cost one
/// evaluation per content node it is checked against.
const KEYWORD_BYTES_PER_EVALUATION: u64 = 16;

/// The weight of `multipleOf`: big and tiny numbers take arbitrary-precision arithmetic
/// (about 0.9 µs for `1e308` against `0.1`, 60 times a type check).
const MULTIPLE_OF: u64 = 64;

/// Keywords that never cost anything per content node (annotations, and definitions that
/// count only where they are referred to).
const FREE: &[&str] = &[
    "$anchor",
    "$comment",
    "$defs",
    "$dynamicAnchor",
    "$id",
    "$recursiveAnchor",
    "$schema",
    "$vocabulary",
    "default",
    "definitions",
    "deprecated",
    "description",
    "examples",
    "id",
    "readOnly",
    "title",
    "writeOnly",
];

/// The bound of a compiled schema; see the module doc.
#[derive(Debug, Clone)]
pub struct SchemaCost {
    /// Per depth of content, the most evaluations one content node there can receive.
    per_depth: Vec<u64>,
    /// Whether the schema uses `anyOf` or `oneOf`, whose errors keep a copy of the content
    /// each of their branches failed on.
    branches: bool,
    /// How many subschemas the schema has (its `$ref` targets included).
    subschemas: usize,
}

/// What validating one content against a schema can cost at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Subschema evaluations (a string counts once more per 64 bytes).
    pub evaluations: u64,
    /// Bytes of content that the errors of `anyOf` and `oneOf` branches copy, were every
    /// evaluation to fail (0 without such branches).
    pub copied_bytes: u64,
}

/// One subschema and the subschemas it applies.
#[derive(Debug, Default)]
struct Node {
    /// The work of its own keywords on one content node.
    weight: u64,
    /// Applied to the same content node: `allOf`, `anyOf`, `oneOf`, `not`, `if`, `then`,
    /// `else`, `dependentSchemas`, `$ref` and its dynamic forms.
    in_place: Vec<usize>,
    /// `properties`: the one that a member's name picks applies to it.
    members: Vec<usize>,
    /// Applied to every member: `patternProperties`, `additionalProperties`,
    /// `unevaluatedProperties`, `propertyNames`.
    every_member: Vec<usize>,
    /// `prefixItems` (and `items` as an array): the one at an item's position applies to it.
    positions: Vec<usize>,
    /// Applied to every item: `items`, `additionalItems`, `contains`, `unevaluatedItems`.
    every_item: Vec<usize>,
}

/// The subschemas of one schema, found by following its keywords and references.
struct Graph<'r> {
    draft: Draft,
    nodes: Vec<Node>,
    ids: HashMap<*const Value, usize>,
    todo: Vec<(usize, &'r Value, Resolver<'r>)>,
    /// Subschemas with a `$dynamicAnchor`, by name, and with `"$recursiveAnchor": true`: the
    /// dynamic forms of `$ref` may land on any of them.
    dynamic_anchors: HashMap<&'r str, Vec<&'r Value>>,
    recursive_anchors: Vec<&'r Value>,
    /// `uniqueItems` compares whole items: a node applied to every item and, below it, to
    /// everything they hold.
    whole_items: Option<usize>,
    branches: bool,
}

impl SchemaCost {
    /// The bound of `schema` (one that jsonschema compiled). Errors are INVALID_SCHEMA
    /// messages: a `$ref` loop that never descends into the content, or a reference that
    /// cannot be followed.
    pub fn of(schema: &Value) -> Result<Self, String> {
        let draft = Draft::default().detect(schema);
        let resource = draft.create_resource_ref(schema);
        let base = resource.id().unwrap_or("json-schema:///");
        let unusable = |e: referencing::Error| format!("schema reference cannot be followed: {e}");
        // No retriever: references to other documents than the known meta-schemas fail.
        let registry = Registry::new()
            .draft(draft)
            .add(base, resource)
            .and_then(|r| r.prepare())
            .map_err(unusable)?;
        let base = uri::from_str(base.trim_end_matches('#')).map_err(unusable)?;
        let mut graph = Graph {
            draft,
            nodes: Vec::new(),
            ids: HashMap::new(),
            todo: Vec::new(),
            dynamic_anchors: HashMap::new(),
            recursive_anchors: Vec::new(),
            whole_items: None,
            branches: false,
        };
        graph.find_anchors(schema);
        let root = graph.node(schema, &registry.resolver(base))?;
        while let Some((id, value, resolver)) = graph.todo.pop() {
            graph.expand(id, value, &resolver)?;
        }
        let order = graph.in_place_order()?;
        Ok(SchemaCost {
            per_depth: graph.per_depth(&order, root),
            branches: graph.branches,
            subschemas: graph.nodes.len(),
        })
    }

    /// How many subschemas the schema has, its `$ref` targets included.
    pub fn subschemas(&self) -> usize {
        self.subschemas
    }

    /// The most work validating `content` against the schema can take.
    pub fn work(&self, content: &Value) -> Work {
        // A node's bytes are copied with the errors of every ancestor and of itself.
        let mut above = Vec::with_capacity(DEPTHS);
        let mut sum = 0u64;
        for &n in &self.per_depth {
            sum = sum.saturating_add(n);
            above.push(sum);
        }
        let mut work = Work {
            evaluations: 0,
            copied_bytes: 0,
        };
        self.walk(content, 0, 0, &above, &mut work);
        if !self.branches {
            work.copied_bytes = 0;
        }
        work
    }

    /// Adds the work on `v` at `depth` (with its member name of `name_len` bytes) and below.
    fn walk(&self, v: &Value, depth: usize, name_len: usize, above: &[u64], work: &mut Work) {
        let depth = depth.min(DEPTHS - 1);
        let (own_bytes, string_len) = match v {
            Value::String(s) => (s.len() + 2, s.len()),
            Value::Array(a) => (2 + a.len(), 0),
            Value::Object(o) => (2 + o.len(), 0),
            _ => (4, 0),
        };
        let units = 1 + to_u64(string_len + name_len) / STRING_BYTES_PER_EVALUATION;
        work.evaluations = work
            .evaluations
            .saturating_add(units.saturating_mul(self.per_depth[depth]));
        work.copied_bytes = work
            .copied_bytes
            .saturating_add(to_u64(own_bytes + name_len).saturating_mul(above[depth]));
        match v {
            Value::Array(a) => {
                for item in a {
                    self.walk(item, depth + 1, 0, above, work);
                }
            }
            Value::Object(o) => {
                for (name, item) in o {
                    self.walk(item, depth + 1, name.len() + 3, above, work);
                }
            }
            _ => {}
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What checking `v`, a keyword's value, against one content node can cost.
fn keyword_weight(v: &Value) -> u64 {
    match v {
        Value::String(s) => 1 + to_u64(s.len()) / KEYWORD_BYTES_PER_EVALUATION,
        Value::Array(a) => a
            .iter()
            .fold(1u64, |w, item| w.saturating_add(keyword_weight(item))),
        Value::Object(o) => o.iter().fold(1u64, |w, (name, item)| {
            w.saturating_add(to_u64(name.len()) / KEYWORD_BYTES_PER_EVALUATION)
                .saturating_add(keyword_weight(item))
        }),
        _ => 1,
    }
}

impl<'r> Graph<'r> {
    /// The node of `value`, new if not seen yet (then queued for [`Graph::expand`]).
    fn node(&mut self, value: &'r Value, resolver: &Resolver<'r>) -> Result<usize, String> {
        if let Some(&id) = self.ids.get(&std::ptr::from_ref(value)) {
            return Ok(id);
        }
        let resolver = resolver
            .in_subresource(self.draft.create_resource_ref(value))
            .map_err(|e| format!("schema $id cannot be used: {e}"))?;
        let id = self.push(Node::default());
        self.ids.insert(std::ptr::from_ref(value), id);
        self.todo.push((id, value, resolver));
        Ok(id)
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node of `uniqueItems`, applied to every item and everything inside it.
    fn whole_items(&mut self) -> usize {
        if let Some(id) = self.whole_items {
            return id;
        }
        let id = self.push(Node {
            weight: 1,
            ..Node::default()
        });
        self.nodes[id].every_member.push(id);
        self.nodes[id].every_item.push(id);
        self.whole_items = Some(id);
        id
    }

    /// The nodes that `keyword` (`$ref`, `$dynamicRef` or `$recursiveRef`) with `reference`
    /// may land on.
    fn targets(
        &mut self,
        keyword: &str,
        reference: &str,
        resolver: &Resolver<'r>,
    ) -> Result<Vec<usize>, String> {
        let lookup = if keyword == "$recursiveRef" {
            "#"
        } else {
            reference
        };
        let resolved = resolver
            .lookup(lookup)
            .map_err(|e| format!("schema {keyword} {reference:?} cannot be followed: {e}"))?;
        let mut targets = vec![self.node(resolved.contents(), resolved.resolver())?];
        let dynamic: Vec<&'r Value> = match keyword {
            "$dynamicRef" => reference
                .rsplit_once('#')
                .and_then(|(_, name)| self.dynamic_anchors.get(name))
                .cloned()
                .unwrap_or_default(),
            "$recursiveRef" => self.recursive_anchors.clone(),
            _ => Vec::new(),
        };
        for value in dynamic {
            targets.push(self.node(value, resolver)?);
        }
        targets.sort_unstable();
        targets.dedup();
        Ok(targets)
    }

    /// Records what the subschema `value` (node `id`) weighs and applies.
    fn expand(
        &mut self,
        id: usize,
        value: &'r Value,
        resolver: &Resolver<'r>,
    ) -> Result<(), String> {
        let mut node = Node {
            weight: 1,
            ..Node::default()
        };
        let Some(object) = value.as_object() else {
            self.nodes[id] = node;
            return Ok(());
        };
        // Before 2019-09, keywords beside `$ref` are ignored.
        let ref_only = matches!(self.draft, Draft::Draft4 | Draft::Draft6 | Draft::Draft7)
            && object.contains_key("$ref");
        for (keyword, v) in object {
            if FREE.contains(&keyword.as_str()) || (ref_only && keyword != "$ref") {
                continue;
            }
            let (group, subschemas): (&mut Vec<usize>, Vec<&'r Value>) = match (keyword.as_str(), v)
            {
                ("allOf" | "anyOf" | "oneOf", Value::Array(a)) => {
                    self.branches |= keyword != "allOf";
                    (&mut node.in_place, a.iter().collect())
                }
                ("not" | "if" | "then" | "else", _) => (&mut node.in_place, vec![v]),
                ("dependentSchemas" | "dependencies", Value::Object(o)) => (
                    &mut node.in_place,
                    o.values().filter(|s| !s.is_array()).collect(),
                ),
                ("$ref" | "$dynamicRef" | "$recursiveRef", Value::String(r)) => {
                    let targets = self.targets(keyword, r, resolver)?;
                    node.in_place.extend(targets);
                    (&mut node.in_place, Vec::new())
                }
                ("properties", Value::Object(o)) => (&mut node.members, o.values().collect()),
                ("patternProperties", Value::Object(o)) => {
                    (&mut node.every_member, o.values().collect())
                }
                ("additionalProperties" | "unevaluatedProperties" | "propertyNames", _) => {
                    (&mut node.every_member, vec![v])
                }
                ("prefixItems" | "items", Value::Array(a)) => {
                    (&mut node.positions, a.iter().collect())
                }
                ("items" | "additionalItems" | "contains" | "unevaluatedItems", _) => {
                    (&mut node.every_item, vec![v])
                }
                ("uniqueItems", Value::Bool(true)) => {
                    let whole = self.whole_items();
                    node.every_item.push(whole);
                    (&mut node.every_item, Vec::new())
                }
                ("multipleOf", _) => {
                    node.weight = node.weight.saturating_add(MULTIPLE_OF);
                    continue;
                }
                _ => {
                    node.weight = node.weight.saturating_add(keyword_weight(v));
                    continue;
                }
            };
            // Subschemas weigh as nodes of their own; finding each costs one.
            node.weight = node.weight.saturating_add(1 + to_u64(subschemas.len()));
            for s in subschemas {
                let child = self.node(s, resolver)?;
                group.push(child);
            }
        }
        self.nodes[id] = node;
        Ok(())
    }

    /// Collects the subschemas that dynamic references may land on, anywhere in `value`.
    fn find_anchors(&mut self, value: &'r Value) {
        match value {
            Value::Object(o) => {
                if let Some(Value::String(name)) = o.get("$dynamicAnchor") {
                    self.dynamic_anchors
                        .entry(name.as_str())
                        .or_default()
                        .push(value);
                }
                if o.get("$recursiveAnchor") == Some(&Value::Bool(true)) {
                    self.recursive_anchors.push(value);
                }
                o.values().for_each(|v| self.find_anchors(v));
            }
            Value::Array(a) => a.iter().for_each(|v| self.find_anchors(v)),
            _ => {}
        }
    }

    /// The nodes ordered so that what a node applies in place comes before it; an error when
    /// that is a loop (a schema that applies itself to the same content node, for ever).
    fn in_place_order(&self) -> Result<Vec<usize>, String> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark = vec![Mark::New; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        for start in 0..self.nodes.len() {
            if mark[start] != Mark::New {
                continue;
            }
            mark[start] = Mark::Open;
            let mut stack = vec![(start, 0)];
            while let Some((id, next)) = stack.pop() {
                let Some(&child) = self.nodes[id].in_place.get(next) else {
                    mark[id] = Mark::Done;
                    order.push(id);
                    continue;
                };
                stack.push((id, next + 1));
                match mark[child] {
                    Mark::New => {
                        mark[child] = Mark::Open;
                        stack.push((child, 0));
                    }
                    Mark::Open => {
                        return Err("schema applies itself to the same value in a loop \
                                    ($ref, allOf, anyOf, oneOf, not, if/then/else) without \
                                    descending into it, so validating never ends"
                            .into());
                    }
                    Mark::Done => {}
                }
            }
        }
        Ok(order)
    }

    /// For each depth of content, the most evaluations one content node there receives when
    /// `root` is applied to the content.
    fn per_depth(&self, order: &[usize], root: usize) -> Vec<u64> {
        let mut per_depth = Vec::with_capacity(DEPTHS);
        let mut below = vec![0u64; self.nodes.len()];
        let mut here = vec![0u64; self.nodes.len()];
        let max = |below: &[u64], ids: &[usize]| ids.iter().map(|&c| below[c]).max().unwrap_or(0);
        let sum = |below: &[u64], ids: &[usize]| {
            ids.iter().fold(0u64, |s, &c| s.saturating_add(below[c]))
        };
        for depth in 0..DEPTHS {
            for &id in order {
                let n = &self.nodes[id];
                let own = if depth == 0 {
                    n.weight
                } else {
                    let member =
                        max(&below, &n.members).saturating_add(sum(&below, &n.every_member));
                    let item = max(&below, &n.positions).saturating_add(sum(&below, &n.every_item));
                    member.max(item)
                };
                here[id] = n
                    .in_place
                    .iter()
                    .fold(own, |s, &c| s.saturating_add(here[c]));
            }
            per_depth.push(here[root]);
            if here.iter().all(|&n| n == 0) {
                break;
            }
            std::mem::swap(&mut below, &mut here);
        }
        per_depth.resize(DEPTHS, 0);
        per_depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cost(schema: Value) -> SchemaCost {
        SchemaCost::of(&schema).expect("bounded")
    }

    fn evaluations(schema: Value, content: Value) -> u64 {
        cost(schema).work(&content).evaluations
    }

    /// `anyOf` branches that refer to one definition, level after level: the work doubles
    /// with each level (what took 29 s and 6 GB at 22 levels).
    fn doubling(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..levels {
            let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
            defs.insert(format!("a{i}"), json!({"anyOf": [next, next]}));
        }
        defs.insert(format!("a{levels}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/a0"})
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(0), |v, _| json!([v]))
    }

    #[test]
    fn branches_that_refer_to_one_definition_are_counted_as_often_as_they_apply() {
        let ten = evaluations(doubling(10), json!(5));
        let twenty = evaluations(doubling(20), json!(5));
        assert!(ten >= 1 << 10, "{ten}");
        assert!(twenty >= ten << 10, "{ten} {twenty}");
        assert_eq!(evaluations(doubling(200), json!(5)), u64::MAX);
    }

    #[test]
    fn a_recursive_schema_with_two_branches_doubles_with_each_level_of_content() {
        let schema = json!({"anyOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]});
        let shallow = evaluations(schema.clone(), nested(10));
        let deep = evaluations(schema, nested(20));
        assert!(shallow >= 1 << 10, "{shallow}");
        assert!(deep >= shallow << 10, "{shallow} {deep}");
    }

    #[test]
    fn a_recursive_schema_with_one_branch_is_linear_in_the_content() {
        let schema = json!({"anyOf": [{"items": {"$ref": "#"}}, {"type": "integer"}]});
        let shallow = evaluations(schema.clone(), nested(10));
        let deep = evaluations(schema, nested(100));
        assert!(deep <= shallow * 20, "{shallow} {deep}");
    }

    #[test]
    fn branches_multiply_with_the_items_they_apply_to() {
        let branches = |n: usize| json!({"items": {"anyOf": vec![json!({"const": 1}); n]}});
        let items = |n: usize| json!(vec![0; n]);
        let small = evaluations(branches(10), items(10));
        assert!(small >= 100, "{small}");
        assert!(evaluations(branches(100), items(100)) >= small * 50);
    }

    #[test]
    fn properties_cost_the_one_that_applies_and_patterns_cost_all() {
        let props = |n: usize| {
            let p: serde_json::Map<String, Value> = (0..n)
                .map(|i| (format!("p{i}"), json!({"type": "string"})))
                .collect();
            json!({"properties": p})
        };
        let patterns = |n: usize| {
            let p: serde_json::Map<String, Value> = (0..n)
                .map(|i| (format!("^p{i}$"), json!({"type": "string"})))
                .collect();
            json!({"patternProperties": p})
        };
        let content = |n: usize| -> Value {
            Value::Object((0..n).map(|i| (format!("p{i}"), json!("x"))).collect())
        };
        // Each member meets one of 1,000 properties, but every one of 1,000 patterns.
        let by_name = evaluations(props(1000), content(1000));
        let by_pattern = evaluations(patterns(1000), content(1000));
        assert!(by_name < 10_000, "{by_name}");
        assert!(by_pattern > 1_000_000, "{by_pattern}");
    }

    #[test]
    fn unique_items_and_long_strings_cost_what_they_read() {
        let unique = evaluations(json!({"uniqueItems": true}), json!(vec![[1, 2]; 1000]));
        assert!(unique >= 3000, "{unique}");
        let short = evaluations(json!({"pattern": "a"}), json!("a"));
        let long = evaluations(json!({"pattern": "a"}), json!("a".repeat(64_000)));
        assert!(long >= short * 1000, "{short} {long}");
    }

    #[test]
    fn only_branches_copy_content() {
        let big = Value::Object((0..1000).map(|i| (format!("k{i}"), json!(i))).collect());
        let plain = cost(json!({"type": "string"})).work(&big);
        assert_eq!(plain.copied_bytes, 0);
        let branches = cost(json!({"anyOf": vec![json!({"type": "string"}); 100]})).work(&big);
        assert!(branches.copied_bytes >= 100 * 8000, "{branches:?}");
    }

    #[test]
    fn a_loop_that_never_descends_is_refused() {
        for schema in [
            json!({"$ref": "#"}),
            json!({"anyOf": [{"$ref": "#"}, {"type": "string"}]}),
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
                   "$ref": "#/$defs/a"}),
        ] {
            let e = SchemaCost::of(&schema).expect_err("a loop");
            assert!(e.contains("loop"), "{e}");
        }
    }

    #[test]
    fn ordinary_schemas_are_cheap() {
        let tool = json!({"type": "object", "required": ["to", "amount"],
            "properties": {"to": {"type": "string", "format": "email"},
                           "amount": {"type": "number", "minimum": 0},
                           "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}});
        let w = evaluations(tool, json!({"to": "a@b.co", "amount": 5, "note": null}));
        assert!(w < 100, "{w}");
        // References by $id and anchors, and to a meta-schema, are followed.
        let w = evaluations(
            json!({"$id": "https://example.com/root.json",
                   "$defs": {"n": {"$id": "n.json", "type": "number"},
                             "m": {"$anchor": "num", "type": "number"}},
                   "properties": {"a": {"$ref": "n.json"}, "b": {"$ref": "#num"},
                                  "c": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}),
            json!({"a": 1, "b": 2, "c": {"type": "string"}}),
        );
        assert!(w > 10 && w < 100_000, "{w}");
    }
}
