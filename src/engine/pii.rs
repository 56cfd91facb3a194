//! Personal data in text: e-mail addresses, phone numbers, card numbers with a valid check
//! digit, IBANs with a valid checksum, national ids.
