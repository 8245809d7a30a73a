//! Python-compatible text serialisations used by patronictl's output:
//! `json.dumps` (default separators, `ensure_ascii=True`) and PyYAML's
//! `yaml.safe_dump(data, default_flow_style=…, allow_unicode=True, width=200)`.
//!
//! Only what `list` needs is covered: strings, integers, floats, booleans, null,
//! lists and objects (object keys sorted in YAML, as PyYAML's `sort_keys=True`).
//! PyYAML's line folding at 200 columns is not reproduced.

use serde_json::{Map, Number, Value};

// ---------------------------------------------------------------------------
// Python scalars

/// `repr(float)` as CPython prints it (shortest round-trip digits).
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. `1.5e-7`, `1e16`.
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

fn py_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        py_float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Python's `str()` of a JSON-like value (strings raw, `True`/`False`/`None`).
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => py_number(n),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Value::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr()` (strings in single quotes; approximate for exotic characters).
fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::new();
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c)
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        other => py_str(other),
    }
}

/// Python's truth value of a JSON-like value.
pub fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Patroni's `parse_bool`: `str(value).lower()` in `on/true/yes/1`.
pub fn py_parse_bool(v: &Value) -> bool {
    matches!(
        py_str(v).to_lowercase().as_str(),
        "on" | "true" | "yes" | "1"
    )
}

// ---------------------------------------------------------------------------
// json.dumps

/// `json.dumps(value)` with Python's defaults: `", "` / `": "` separators,
/// `ensure_ascii=True` (non-ASCII as lowercase `\uXXXX`, surrogate pairs above U+FFFF).
pub fn json_dumps(v: &Value) -> String {
    let mut out = String::new();
    json_write(&mut out, v);
    out
}

fn json_write(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.push_str(&n.to_string())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                out.push_str(&match f {
                    f if f.is_nan() => "NaN".into(),
                    f if f == f64::INFINITY => "Infinity".into(),
                    f if f == f64::NEG_INFINITY => "-Infinity".into(),
                    f => py_float_repr(f),
                })
            }
        }
        Value::String(s) => json_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json_write(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json_string(out, k);
                out.push_str(": ");
                json_write(out, x);
            }
            out.push('}');
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// yaml.safe_dump

/// `yaml.safe_dump(v, default_flow_style=flow, allow_unicode=True, width=200)`
/// (keys sorted). The result ends with a newline, like PyYAML's.
pub fn yaml_dump(v: &Value, flow: bool) -> String {
    let mut out = String::new();
    if flow {
        yaml_flow(&mut out, v, 0);
        out.push('\n');
        return out;
    }
    match v {
        Value::Object(m) if !m.is_empty() => yaml_block_map(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => yaml_block_seq(&mut out, a, 0, false),
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        scalar => {
            out.push_str(&yaml_scalar(scalar, 0, false, false));
            out.push_str("\n...\n");
        }
    }
    out
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn yaml_block_map(out: &mut String, m: &Map<String, Value>, indent: usize, inline_first: bool) {
    for (i, (k, v)) in sorted(m).into_iter().enumerate() {
        if !(i == 0 && inline_first) {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&yaml_str(k, indent, false, true));
        out.push(':');
        match v {
            Value::Object(c) if !c.is_empty() => {
                out.push('\n');
                yaml_block_map(out, c, indent + 2, false);
            }
            Value::Array(c) if !c.is_empty() => {
                out.push('\n');
                yaml_block_seq(out, c, indent, false);
            }
            scalar => {
                // PyYAML's expect_scalar indents continuation lines one level deeper.
                out.push(' ');
                out.push_str(&yaml_inline(scalar, indent + 2, false));
                out.push('\n');
            }
        }
    }
}

fn yaml_block_seq(out: &mut String, a: &[Value], indent: usize, inline_first: bool) {
    for (i, v) in a.iter().enumerate() {
        if !(i == 0 && inline_first) {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match v {
            Value::Object(c) if !c.is_empty() => yaml_block_map(out, c, indent + 2, true),
            Value::Array(c) if !c.is_empty() => yaml_block_seq(out, c, indent + 2, true),
            scalar => {
                out.push_str(&yaml_inline(scalar, indent + 2, false));
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty collection written inline.
fn yaml_inline(v: &Value, indent: usize, flow: bool) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        s => yaml_scalar(s, indent, flow, false),
    }
}

fn yaml_flow(out: &mut String, v: &Value, parent_indent: usize) {
    // Every flow collection and every scalar is one indentation level deeper (PyYAML's
    // increase_indent(flow=True)); it only matters for multi-line quoted scalars.
    let ci = parent_indent + 2;
    let item = |out: &mut String, x: &Value| match x {
        Value::Object(_) | Value::Array(_) => yaml_flow(out, x, ci),
        s => out.push_str(&yaml_scalar(s, ci + 2, true, false)),
    };
    match v {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&yaml_str(k, ci + 2, true, true));
                out.push_str(": ");
                item(out, x);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                item(out, x);
            }
            out.push(']');
        }
        s => out.push_str(&yaml_scalar(s, ci, true, false)),
    }
}

fn yaml_scalar(v: &Value, indent: usize, flow: bool, key: bool) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                n.to_string()
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_nan() {
                    ".nan".into()
                } else if f.is_infinite() {
                    if f > 0.0 { ".inf" } else { "-.inf" }.into()
                } else {
                    let r = py_float_repr(f).to_lowercase();
                    if !r.contains('.') && r.contains('e') {
                        r.replacen('e', ".0e", 1)
                    } else {
                        r
                    }
                }
            }
        }
        Value::String(s) => yaml_str(s, indent, flow, key),
        _ => unreachable!("collections are not scalars"),
    }
}

struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_ws_or_end(c: Option<&char>) -> bool {
    match c {
        None => true,
        Some(c) => matches!(c, '\0' | ' ' | '\t' | '\r') || is_break(*c),
    }
}

/// PyYAML `Emitter.analyze_scalar` (with `allow_unicode=True`).
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut block_ind = false;
    let mut flow_ind = false;
    let mut line_breaks = false;
    let mut special = false;
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
        flow_ind = true;
    }
    let mut preceded_ws = true;
    let mut followed_ws = n == 1 || is_ws_or_end(chars.get(1));
    let (mut prev_space, mut prev_break) = (false, false);
    for (i, &ch) in chars.iter().enumerate() {
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) {
                flow_ind = true;
                block_ind = true;
            }
            if ch == '?' || ch == ':' {
                flow_ind = true;
                if followed_ws {
                    block_ind = true;
                }
            }
            if ch == '-' && followed_ws {
                flow_ind = true;
                block_ind = true;
            }
        } else {
            if ",?[]{}".contains(ch) {
                flow_ind = true;
            }
            if ch == ':' {
                flow_ind = true;
                if followed_ws {
                    block_ind = true;
                }
            }
            if ch == '#' && preceded_ws {
                flow_ind = true;
                block_ind = true;
            }
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            let unicode = (ch == '\u{85}'
                || ('\u{A0}'..='\u{D7FF}').contains(&ch)
                || ('\u{E000}'..='\u{FFFD}').contains(&ch)
                || ('\u{10000}'..'\u{10FFFF}').contains(&ch))
                && ch != '\u{FEFF}';
            if !unicode {
                special = true;
            }
        }
        if ch == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == n - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(ch) {
            if i == 0 {
                leading_break = true;
            }
            if i == n - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_ws = is_ws_or_end(Some(&ch));
        followed_ws = i + 2 >= n || is_ws_or_end(chars.get(i + 2));
    }
    let mut a = Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain: true,
        allow_block_plain: true,
        allow_single_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if break_space {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if space_break || special {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if line_breaks {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if flow_ind {
        a.allow_flow_plain = false;
    }
    if block_ind {
        a.allow_block_plain = false;
    }
    a
}

/// A string scalar in PyYAML's chosen style (plain, single- or double-quoted).
fn yaml_str(s: &str, indent: usize, flow: bool, key: bool) -> String {
    let a = analyze(s);
    let implicit = !resolves_to_non_str(s);
    if implicit
        && !(key && (a.empty || a.multiline))
        && ((flow && a.allow_flow_plain) || (!flow && a.allow_block_plain))
    {
        return s.to_string();
    }
    if a.allow_single_quoted && !(key && a.multiline) {
        return single_quoted(s, indent);
    }
    double_quoted(s)
}

fn single_quoted(s: &str, indent: usize) -> String {
    let mut out = String::from("'");
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_break(c) {
            let start = i;
            while i < chars.len() && is_break(chars[i]) {
                i += 1;
            }
            if chars[start] == '\n' {
                out.push('\n');
            }
            for &br in &chars[start..i] {
                out.push(br);
            }
            out.push_str(&" ".repeat(indent));
            continue;
        }
        if c == '\'' {
            out.push_str("''");
        } else {
            out.push(c);
        }
        i += 1;
    }
    out.push('\'');
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let esc = match c {
            '\0' => Some("0"),
            '\u{7}' => Some("a"),
            '\u{8}' => Some("b"),
            '\t' => Some("t"),
            '\n' => Some("n"),
            '\u{b}' => Some("v"),
            '\u{c}' => Some("f"),
            '\r' => Some("r"),
            '\u{1b}' => Some("e"),
            '"' => Some("\""),
            '\\' => Some("\\"),
            '\u{85}' => Some("N"),
            '\u{a0}' => Some("_"),
            '\u{2028}' => Some("L"),
            '\u{2029}' => Some("P"),
            _ => None,
        };
        if let Some(e) = esc {
            out.push('\\');
            out.push_str(e);
        } else if (' '..='~').contains(&c)
            || (('\u{A0}'..='\u{D7FF}').contains(&c) || ('\u{E000}'..='\u{FFFD}').contains(&c))
                && c != '\u{FEFF}'
        {
            out.push(c);
        } else if (c as u32) <= 0xFF {
            out.push_str(&format!("\\x{:02X}", c as u32));
        } else if (c as u32) <= 0xFFFF {
            out.push_str(&format!("\\u{:04X}", c as u32));
        } else {
            out.push_str(&format!("\\U{:08X}", c as u32));
        }
    }
    out.push('"');
    out
}

// --- PyYAML's implicit resolvers (YAML 1.1): a plain string that would read back as
// bool/int/float/null/timestamp/merge/value must be quoted.

fn resolves_to_non_str(s: &str) -> bool {
    // Python's `$` also matches before a final newline.
    let candidates = [Some(s), s.strip_suffix('\n')];
    candidates.into_iter().flatten().any(|t| {
        matches!(
            t,
            "yes"
                | "Yes"
                | "YES"
                | "no"
                | "No"
                | "NO"
                | "true"
                | "True"
                | "TRUE"
                | "false"
                | "False"
                | "FALSE"
                | "on"
                | "On"
                | "ON"
                | "off"
                | "Off"
                | "OFF"
                | "~"
                | "null"
                | "Null"
                | "NULL"
                | ""
                | "<<"
                | "="
        ) || is_yaml_int(t)
            || is_yaml_float(t)
            || is_yaml_timestamp(t)
    }) || s.is_empty()
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_if(&mut self, f: impl Fn(u8) -> bool) -> bool {
        match self.peek() {
            Some(c) if f(c) => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }
    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let s = self.i;
        while self.eat_if(&f) {}
        self.i - s
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn sign(&mut self) {
        let _ = self.eat(b'-') || self.eat(b'+');
    }
    /// `(?::[0-5]?[0-9])+` — returns false if not even one group.
    fn sexagesimal(&mut self) -> bool {
        let mut n = 0;
        loop {
            let save = self.i;
            if !self.eat(b':') {
                break;
            }
            let two = matches!(self.b.get(self.i), Some(b'0'..=b'5'))
                && matches!(self.b.get(self.i + 1), Some(b'0'..=b'9'));
            if two {
                self.i += 2;
            } else if !self.eat_if(|c| c.is_ascii_digit()) {
                self.i = save;
                break;
            }
            n += 1;
        }
        n > 0
    }
    fn exponent(&mut self) {
        let save = self.i;
        if self.eat_if(|c| c == b'e' || c == b'E')
            && self.eat_if(|c| c == b'-' || c == b'+')
            && self.eat_while(|c| c.is_ascii_digit()) > 0
        {
            return;
        }
        self.i = save;
    }
}

fn digit_(c: u8) -> bool {
    c.is_ascii_digit() || c == b'_'
}

fn is_yaml_int(s: &str) -> bool {
    let alt = |f: &dyn Fn(&mut Cur) -> bool| {
        let mut c = Cur {
            b: s.as_bytes(),
            i: 0,
        };
        f(&mut c) && c.done()
    };
    alt(&|c| {
        c.sign();
        c.eat(b'0') && c.eat(b'b') && c.eat_while(|x| x == b'0' || x == b'1' || x == b'_') > 0
    }) || alt(&|c| {
        c.sign();
        c.eat(b'0') && c.eat_while(|x| (b'0'..=b'7').contains(&x) || x == b'_') > 0
    }) || alt(&|c| {
        c.sign();
        c.eat(b'0')
            || (c.eat_if(|x| (b'1'..=b'9').contains(&x)) && c.eat_while(digit_) < usize::MAX)
    }) || alt(&|c| {
        c.sign();
        c.eat(b'0') && c.eat(b'x') && c.eat_while(|x| x.is_ascii_hexdigit() || x == b'_') > 0
    }) || alt(&|c| {
        c.sign();
        c.eat_if(|x| (b'1'..=b'9').contains(&x)) && {
            c.eat_while(digit_);
            c.sexagesimal()
        }
    })
}

fn is_yaml_float(s: &str) -> bool {
    let alt = |f: &dyn Fn(&mut Cur) -> bool| {
        let mut c = Cur {
            b: s.as_bytes(),
            i: 0,
        };
        f(&mut c) && c.done()
    };
    alt(&|c| {
        c.sign();
        c.eat_if(|x| x.is_ascii_digit()) && {
            c.eat_while(digit_);
            c.eat(b'.') && {
                c.eat_while(digit_);
                c.exponent();
                true
            }
        }
    }) || alt(&|c| {
        c.eat(b'.') && c.eat_if(|x| x.is_ascii_digit()) && {
            c.eat_while(digit_);
            c.exponent();
            true
        }
    }) || alt(&|c| {
        c.sign();
        c.eat_if(|x| x.is_ascii_digit()) && {
            c.eat_while(digit_);
            c.sexagesimal() && c.eat(b'.') && {
                c.eat_while(digit_);
                true
            }
        }
    }) || {
        let t = s.strip_prefix(['-', '+']).unwrap_or(s);
        matches!(t, ".inf" | ".Inf" | ".INF")
    } || matches!(s, ".nan" | ".NaN" | ".NAN")
}

fn is_yaml_timestamp(s: &str) -> bool {
    let d = |c: u8| c.is_ascii_digit();
    let mut c = Cur {
        b: s.as_bytes(),
        i: 0,
    };
    // date only: exactly YYYY-MM-DD
    if s.len() == 10 {
        let b = s.as_bytes();
        if b[..4].iter().all(|x| d(*x))
            && b[4] == b'-'
            && d(b[5])
            && d(b[6])
            && b[7] == b'-'
            && d(b[8])
            && d(b[9])
        {
            return true;
        }
    }
    let one_or_two = |c: &mut Cur| {
        c.eat_if(d) && {
            c.eat_if(d);
            true
        }
    };
    let ok = c.eat_while(d) == 4
        && c.eat(b'-')
        && one_or_two(&mut c)
        && c.eat(b'-')
        && one_or_two(&mut c)
        && (c.eat_if(|x| x == b'T' || x == b't') || c.eat_while(|x| x == b' ' || x == b'\t') > 0)
        && one_or_two(&mut c)
        && c.eat(b':')
        && c.eat_if(d)
        && c.eat_if(d)
        && c.eat(b':')
        && c.eat_if(d)
        && c.eat_if(d);
    if !ok {
        return false;
    }
    if c.eat(b'.') {
        c.eat_while(d);
    }
    if c.done() {
        return true;
    }
    c.eat_while(|x| x == b' ' || x == b'\t');
    if c.eat(b'Z') {
        return c.done();
    }
    if c.eat_if(|x| x == b'-' || x == b'+') && one_or_two(&mut c) {
        if c.eat(b':') && !(c.eat_if(d) && c.eat_if(d)) {
            return false;
        }
        return c.done();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr() {
        for (f, s) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (0.0001, "0.0001"),
            (-2.5, "-2.5"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(py_float_repr(f), s);
        }
    }

    #[test]
    fn json_like_python() {
        let v = json!([{"a": "é😀\n\"", "b": 1, "c": 1.5, "d": null, "e": [true, false]}]);
        assert_eq!(
            json_dumps(&v),
            r#"[{"a": "\u00e9\ud83d\ude00\n\"", "b": 1, "c": 1.5, "d": null, "e": [true, false]}]"#
        );
    }

    #[test]
    fn yaml_resolvers() {
        for s in [
            "123",
            "0x1F",
            "0o7",
            "1:30",
            "1.5",
            ".5",
            "1e5",
            "2023-09-13",
            "2023-09-13T18:00:00-03:00",
            "2023-09-13 18:00:00",
            "yes",
            "~",
            "",
            "1_000",
            "+.inf",
        ] {
            let expect = s != "0o7" && s != "1e5";
            assert_eq!(resolves_to_non_str(s), expect, "{s}");
        }
        for s in [
            "0/40003E8",
            "127.0.0.1:5433",
            "10.0.0.1",
            "bar",
            "y",
            "2023-09-13T18:00:00+",
        ] {
            assert!(!resolves_to_non_str(s), "{s}");
        }
    }

    #[test]
    fn yaml_styles() {
        let v = json!({"foo": "bar", "nofailover": true, "a b": "x: y", "n": "123", "e": "", "l": [1, "two"], "m": {}, "t": "a\tb"});
        assert_eq!(
            yaml_dump(&v, false),
            "a b: 'x: y'\ne: ''\nfoo: bar\nl:\n- 1\n- two\nm: {}\nn: '123'\nnofailover: true\nt: \"a\\tb\"\n"
        );
        assert_eq!(
            yaml_dump(&v, true),
            "{a b: 'x: y', e: '', foo: bar, l: [1, two], m: {}, n: '123', nofailover: true, t: \"a\\tb\"}\n"
        );
    }
}
