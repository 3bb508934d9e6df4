//! Checking a regular expression the way Envoy's engine (RE2) will read it, so that the
//! translator never emits one that Envoy rejects or reads differently.
//!
//! The expression is parsed with `regex-syntax`, whose grammar is a superset of RE2's; what
//! only `regex-syntax` accepts is refused with the reason:
//! - flags other than `i`, `m`, `s`, `U` (RE2 has no `x`, `u` or `R`);
//! - class set operations (`[a-z&&[^aeiou]]`, `--`, `~~`), which RE2 reads as literal text;
//! - `\b{start}`-style and `\<`, `\>` word boundaries;
//! - Unicode properties other than general categories and common scripts;
//! - a counted repetition over 1000, or nested counted repetitions whose counts multiply past
//!   1000 (RE2's own rule);
//! - an expression whose compiled program would be larger than [`MAX_PROGRAM_SIZE`].
//!
//! The program size is estimated the way RE2 counts its instructions: a byte of literal text
//! is one, a character class one per range, a counted repetition its body times the count,
//! plus a few for the program's frame (`/x{1000}` is 1005 for both). Envoy's own limit is
//! raised in `trellis bootstrap` (RE2's default is 100, which a UUID path pattern exceeds), so
//! this estimate is what bounds a tenant's pattern.

use regex_syntax::ast::{self, Ast, Visitor};
use regex_syntax::hir::{Class, Hir, HirKind};

/// The largest program (estimated in RE2 instructions) an expression may compile to.
pub const MAX_PROGRAM_SIZE: usize = 10_000;

/// RE2's largest repetition count, also for the product of nested counts.
pub const MAX_REPEAT: u64 = 1000;

/// Envoy's runtime key bounding RE2 program sizes, and the value `trellis bootstrap` sets.
pub const ENVOY_PROGRAM_SIZE_KEY: &str = "re2.max_program_size.error_level";
/// See [`ENVOY_PROGRAM_SIZE_KEY`]: far above [`MAX_PROGRAM_SIZE`], so the translator's check is
/// the one that decides.
pub const ENVOY_PROGRAM_SIZE_LIMIT: u32 = 100_000;

/// Unicode general categories (RE2 supports them all).
const CATEGORIES: &[&str] = &[
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc",
    "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C",
    "Cc", "Cf", "Co", "Cs",
];

/// Scripts commonly matched on (RE2 knows every script; these names mean the same to both).
const SCRIPTS: &[&str] = &[
    "Arabic",
    "Armenian",
    "Bengali",
    "Common",
    "Cyrillic",
    "Devanagari",
    "Georgian",
    "Greek",
    "Gujarati",
    "Han",
    "Hangul",
    "Hebrew",
    "Hiragana",
    "Inherited",
    "Kannada",
    "Katakana",
    "Khmer",
    "Lao",
    "Latin",
    "Malayalam",
    "Myanmar",
    "Tamil",
    "Telugu",
    "Thai",
    "Tibetan",
];

/// Checks `expression`; the error says what Envoy would not accept (or would read differently).
pub fn check(expression: &str) -> Result<(), String> {
    if expression.is_empty() {
        return Err("an empty regular expression is not accepted by Envoy".to_string());
    }
    let ast = ast::parse::ParserBuilder::new()
        .nest_limit(250)
        .build()
        .parse(expression)
        .map_err(|e| format!("invalid regular expression: {}", e.kind()))?;
    ast::visit(&ast, Re2Syntax::default())?;
    let hir = translate(expression, &ast)?;
    let size = program_size(&hir).saturating_add(4);
    if size > MAX_PROGRAM_SIZE {
        return Err(format!(
            "the expression would compile to about {size} instructions; the limit is \
             {MAX_PROGRAM_SIZE} (simplify it, or use fewer or smaller counted repetitions)"
        ));
    }
    Ok(())
}

/// The expression's HIR for the size estimate. RE2's `\d`, `\w` and `\s` are ASCII and it
/// compiles to bytes, so the byte-oriented, non-Unicode reading is tried first; an expression
/// with Unicode classes is read as Unicode.
fn translate(expression: &str, ast: &Ast) -> Result<Hir, String> {
    let bytes = regex_syntax::hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(expression, ast);
    match bytes {
        Ok(hir) => Ok(hir),
        Err(_) => regex_syntax::hir::translate::TranslatorBuilder::new()
            .build()
            .translate(expression, ast)
            .map_err(|e| format!("invalid regular expression: {}", e.kind())),
    }
}

/// Walks the syntax tree for what RE2 does not read as `regex-syntax` does.
#[derive(Default)]
struct Re2Syntax {
    /// Counted repetitions enclosing the current node, multiplied.
    nested: Vec<u64>,
}

impl Re2Syntax {
    fn product(&self) -> u64 {
        self.nested
            .iter()
            .fold(1u64, |acc, n| acc.saturating_mul(*n))
    }
}

fn check_flags(flags: &ast::Flags) -> Result<(), String> {
    for item in &flags.items {
        if let ast::FlagsItemKind::Flag(flag) = &item.kind {
            let name = match flag {
                ast::Flag::IgnoreWhitespace => "x",
                ast::Flag::Unicode => "u",
                ast::Flag::CRLF => "R",
                _ => continue,
            };
            return Err(format!(
                "the flag {name} is not supported by Envoy's regex engine (RE2 knows i, m, s and U)"
            ));
        }
    }
    Ok(())
}

fn check_unicode(class: &ast::ClassUnicode) -> Result<(), String> {
    match &class.kind {
        ast::ClassUnicodeKind::OneLetter(c) => {
            if CATEGORIES.contains(&c.to_string().as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "the Unicode class \\p{c} is not known to Envoy's regex engine"
                ))
            }
        }
        ast::ClassUnicodeKind::Named(name) => {
            if name == "Any"
                || CATEGORIES.contains(&name.as_str())
                || SCRIPTS.contains(&name.as_str())
            {
                Ok(())
            } else {
                Err(format!(
                    "the Unicode property {name:?} is not supported by Envoy's regex engine (use \
                     a general category such as L or Nd, or a script such as Greek)"
                ))
            }
        }
        ast::ClassUnicodeKind::NamedValue { name, value, .. } => Err(format!(
            "the Unicode property {name}={value} is not supported by Envoy's regex engine"
        )),
    }
}

impl Visitor for Re2Syntax {
    type Output = ();
    type Err = String;

    fn finish(self) -> Result<(), String> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), String> {
        match ast {
            Ast::Flags(f) => check_flags(&f.flags)?,
            Ast::Group(g) => {
                if let ast::GroupKind::NonCapturing(flags) = &g.kind {
                    check_flags(flags)?;
                }
                if let ast::GroupKind::CaptureName { name, .. } = &g.kind
                    && !name
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!(
                        "the group name {:?} is not valid for Envoy's regex engine (letters, \
                         digits and _ only)",
                        name.name
                    ));
                }
            }
            Ast::Assertion(a) => {
                use ast::AssertionKind::*;
                if matches!(
                    a.kind,
                    WordBoundaryStart
                        | WordBoundaryEnd
                        | WordBoundaryStartAngle
                        | WordBoundaryEndAngle
                        | WordBoundaryStartHalf
                        | WordBoundaryEndHalf
                ) {
                    return Err(
                        "special word boundaries (\\b{start}, \\<, \\>) are not supported by \
                         Envoy's regex engine; use \\b"
                            .to_string(),
                    );
                }
            }
            Ast::ClassUnicode(c) => check_unicode(c)?,
            Ast::Repetition(r) => {
                if let ast::RepetitionKind::Range(range) = &r.op.kind {
                    let (min, max) = match range {
                        ast::RepetitionRange::Exactly(n) => (*n, None),
                        ast::RepetitionRange::AtLeast(n) => (*n, None),
                        ast::RepetitionRange::Bounded(n, m) => (*n, Some(*m)),
                    };
                    let count = u64::from(max.unwrap_or(min));
                    if u64::from(min) > MAX_REPEAT || count > MAX_REPEAT {
                        return Err(format!(
                            "a repetition count of {count} is over {MAX_REPEAT}, the most \
                             Envoy's regex engine accepts"
                        ));
                    }
                    self.nested.push(count.max(1));
                    if self.product() > MAX_REPEAT {
                        return Err(format!(
                            "nested repetition counts multiply to more than {MAX_REPEAT}, the \
                             most Envoy's regex engine accepts"
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_post(&mut self, ast: &Ast) -> Result<(), String> {
        if let Ast::Repetition(r) = ast
            && matches!(r.op.kind, ast::RepetitionKind::Range(_))
        {
            self.nested.pop();
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), String> {
        if let ast::ClassSetItem::Unicode(c) = item {
            check_unicode(c)?;
        }
        Ok(())
    }

    fn visit_class_set_binary_op_pre(&mut self, _op: &ast::ClassSetBinaryOp) -> Result<(), String> {
        Err(
            "class set operations (&&, --, ~~) are not supported by Envoy's regex engine, which \
             reads them as literal characters"
                .to_string(),
        )
    }
}

/// What the part of a character class beyond ASCII is counted as (RE2 measured 2 to 7).
const NON_ASCII_CLASS: usize = 8;

/// The estimated number of RE2 instructions `hir` compiles to (without the program's frame).
fn program_size(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(lit) => lit.0.len(),
        // RE2 compiles the ASCII part of a class to one instruction per range and the rest
        // to a handful of UTF-8 byte ranges (measured: `\p{L}` is 7 instructions, `[α-ω]` 2).
        HirKind::Class(Class::Unicode(c)) => {
            let ascii = c.ranges().iter().filter(|r| r.start() <= '\x7f').count();
            let beyond = c.ranges().iter().any(|r| r.end() > '\x7f');
            (ascii + if beyond { NON_ASCII_CLASS } else { 0 }).max(1)
        }
        HirKind::Class(Class::Bytes(c)) => c.ranges().len().max(1),
        HirKind::Look(_) => 1,
        HirKind::Repetition(r) => {
            let body = program_size(&r.sub);
            let copies = match r.max {
                Some(max) => max as usize,
                None => (r.min as usize).saturating_add(1),
            };
            body.saturating_mul(copies).saturating_add(copies)
        }
        HirKind::Capture(c) => program_size(&c.sub).saturating_add(2),
        HirKind::Concat(parts) => parts
            .iter()
            .map(program_size)
            .fold(0, usize::saturating_add),
        HirKind::Alternation(parts) => parts
            .iter()
            .map(program_size)
            .fold(parts.len().saturating_sub(1), usize::saturating_add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_envoy_accepts_is_accepted() {
        for ok in [
            "/items/[0-9]+",
            "/api/v[0-9]+/users/[a-f0-9-]{36}/orders",
            "(?i)/api/.*",
            "(?P<id>[0-9]+)",
            "(?<id>[0-9]+)",
            "/x{1000}",
            "(a{10}){100}",
            "\\p{Greek}+",
            "\\pL\\p{Lu}",
            "^(?:https://app[0-9]\\.example\\.com|https://other\\.example\\.org)$",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_envoy_rejects_or_reads_differently_is_refused_with_the_reason() {
        for (bad, reason) in [
            ("/x{1001}", "over 1000"),
            ("(a{100}){11}", "multiply"),
            ("(?x) /a b", "flag x"),
            ("(?u:a)", "flag u"),
            ("[a-z&&[^aeiou]]", "class set operations"),
            ("[a-z--b]", "class set operations"),
            ("\\b{start}a", "word boundaries"),
            ("\\<a\\>", "word boundaries"),
            ("\\p{Emoji}", "Unicode property"),
            ("\\p{gc=L}", "Unicode property"),
            ("[0-9", "invalid regular expression"),
            ("a{,5}", "invalid regular expression"),
            ("(?=a)", "invalid regular expression"),
            ("", "empty"),
            ("[\\x{0}-\\x{10FFFF}]{1000}[ab]{1000}", "instructions"),
        ] {
            let error = check(bad).expect_err(bad);
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }

    #[test]
    fn the_size_estimate_follows_re2_on_measured_expressions() {
        // RE2 program sizes as Envoy 1.40 reports them ("RE2 program size of N").
        for (expression, re2) in [
            ("/items/[0-9]+", 13),
            ("/api/v[0-9]+/users/[a-f0-9-]{36}/orders", 134),
            ("a", 5),
            ("/x{1000}", 1005),
            ("\\d{3}-\\d{4}", 12),
            ("\\p{L}", 11),
            ("[α-ω]", 6),
            ("αβγ", 10),
            ("\\w", 7),
        ] {
            let ast = ast::parse::Parser::new()
                .parse(expression)
                .unwrap_or_else(|e| panic!("{e}"));
            let hir = translate(expression, &ast).unwrap_or_else(|e| panic!("{e}"));
            let estimate = program_size(&hir) + 4;
            assert!(
                estimate >= re2 && estimate <= re2 * 3 + 10,
                "{expression}: estimated {estimate}, RE2 {re2}"
            );
        }
    }
}
