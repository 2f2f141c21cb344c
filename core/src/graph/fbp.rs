//! The `.fbp` DSL (the flowbased/fbp grammar as MsgFlo uses it):
//!
//! ```text
//! # @runtime msgflo                      annotations (graph properties)
//! INPORT=reader.IN:FILENAME              exported ports
//! 'a.txt' -> IN reader(ReadFile)         IIP (quoted text) into a port
//! reader OUT -> IN[0] split(Split) OUT[1] -> IN (Display)   chains, indices, anonymous nodes
//! a(Comp:key=value) OUT -> IN b, b OUT -> IN c              metadata; ',' separates statements
//! ```
//!
//! Port names are case-insensitive (stored lower-case); process names keep
//! their case. Errors give line and column.

use super::{Connection, Export, Graph, ParseError, PortRef, Process};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Arrow,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Equals,
    Colon,
    Newline,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    column: usize,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '/' | '-' | '+' | '.' | '*' | '@' | '$')
}

fn lex(text: &str, graph: &mut Graph) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    for (li, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut paren = 0usize;
        while i < chars.len() {
            let c = chars[i];
            let (line_no, col) = (li + 1, i + 1);
            let push = |out: &mut Vec<Token>, tok| out.push(Token { tok, line: line_no, column: col });
            match c {
                ' ' | '\t' | '\r' => i += 1,
                '#' => {
                    let rest: String = chars[i + 1..].iter().collect();
                    if let Some(ann) = rest.trim().strip_prefix('@') {
                        let mut parts = ann.splitn(2, char::is_whitespace);
                        if let Some(key) = parts.next().filter(|k| !k.is_empty()) {
                            let value = parts.next().unwrap_or("").trim();
                            graph.properties.insert(key.to_owned(), value.into());
                        }
                    }
                    break;
                }
                '\'' => {
                    let mut s = String::new();
                    let mut j = i + 1;
                    loop {
                        match chars.get(j) {
                            None => return Err(err(line_no, col, "unterminated quoted string (IIP)")),
                            Some('\\') if chars.get(j + 1) == Some(&'\'') => {
                                s.push('\'');
                                j += 2;
                            }
                            Some('\'') => break,
                            Some(ch) => {
                                s.push(*ch);
                                j += 1;
                            }
                        }
                    }
                    push(&mut out, Tok::Quoted(s));
                    i = j + 1;
                }
                '-' if chars.get(i + 1) == Some(&'>') => {
                    push(&mut out, Tok::Arrow);
                    i += 2;
                }
                '(' => {
                    paren += 1;
                    push(&mut out, Tok::LParen);
                    i += 1;
                }
                ')' => {
                    paren = paren.saturating_sub(1);
                    push(&mut out, Tok::RParen);
                    i += 1;
                }
                '[' => {
                    push(&mut out, Tok::LBracket);
                    i += 1;
                }
                ']' => {
                    push(&mut out, Tok::RBracket);
                    i += 1;
                }
                ',' => {
                    push(&mut out, Tok::Comma);
                    i += 1;
                }
                '=' => {
                    push(&mut out, Tok::Equals);
                    i += 1;
                }
                ':' => {
                    push(&mut out, Tok::Colon);
                    i += 1;
                }
                c if is_word(c) => {
                    let start = i;
                    // Inside a component's parentheses metadata values may hold more.
                    while i < chars.len() && (is_word(chars[i]) || (paren > 0 && !matches!(chars[i], ')' | ',' | '=' | ':'))) {
                        if !is_word(chars[i]) && chars[i].is_whitespace() {
                            break;
                        }
                        i += 1;
                    }
                    push(&mut out, Tok::Word(chars[start..i].iter().collect()));
                }
                other => return Err(err(line_no, col, &format!("unexpected character {other:?}"))),
            }
        }
        // A line ending in '->' continues on the next line.
        if !matches!(out.last(), Some(Token { tok: Tok::Arrow, .. })) {
            out.push(Token { tok: Tok::Newline, line: li + 1, column: chars.len() + 1 });
        }
    }
    Ok(out)
}

fn err(line: usize, column: usize, message: &str) -> ParseError {
    ParseError { line, column, message: message.to_owned() }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    graph: Graph,
    anonymous: usize,
}

/// A node with the ports written around it in a chain.
struct NodeUse {
    process: String,
    inport: Option<(String, Option<u32>)>,
    outport: Option<(String, Option<u32>)>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn here(&self) -> (usize, usize) {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| (t.line, t.column))
            .unwrap_or((1, 1))
    }

    fn fail<T>(&self, message: &str) -> Result<T, ParseError> {
        let (l, c) = self.here();
        Err(err(l, c, message))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(&format!("expected {what}, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of file".into(),
            Some(Tok::Newline) => "end of line".into(),
            Some(Tok::Word(w)) => format!("{w:?}"),
            Some(Tok::Quoted(_)) => "a quoted string".into(),
            Some(t) => format!("{t:?}"),
        }
    }

    fn word(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => self.fail(&format!("expected {what}, found {}", self.describe())),
        }
    }

    fn index(&mut self) -> Result<Option<u32>, ParseError> {
        if self.peek() != Some(&Tok::LBracket) {
            return Ok(None);
        }
        self.pos += 1;
        let n = self.word("an array index")?;
        let i = n.parse().or_else(|_| self.fail(&format!("array index must be a number, not {n:?}")))?;
        self.expect(Tok::RBracket, "']'")?;
        Ok(Some(i))
    }

    fn port(&mut self) -> Result<(String, Option<u32>), ParseError> {
        let name = self.word("a port name")?.to_lowercase();
        Ok((name, self.index()?))
    }

    /// `name`, `name(Component)`, `name(Component:meta)`, `(Component)`.
    fn node(&mut self) -> Result<String, ParseError> {
        let name = match self.peek() {
            Some(Tok::LParen) => None,
            _ => Some(self.word("a process name")?),
        };
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let component = self.word("a component name")?;
            let mut metadata = serde_json::Map::new();
            if self.peek() == Some(&Tok::Colon) {
                self.pos += 1;
                loop {
                    let key = self.word("a metadata key")?;
                    let value = if self.peek() == Some(&Tok::Equals) {
                        self.pos += 1;
                        self.word("a metadata value")?
                    } else {
                        String::new()
                    };
                    metadata.insert(key, value.into());
                    if self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        continue;
                    }
                    break;
                }
            }
            self.expect(Tok::RParen, "')'")?;
            let name = name.unwrap_or_else(|| {
                self.anonymous += 1;
                format!("_{}_{}", component.replace('/', "_"), self.anonymous)
            });
            if let Some(existing) = self.graph.processes.get(&name) {
                if existing.component != component {
                    return self.fail(&format!(
                        "process {name:?} declared as {component:?} but was {:?}",
                        existing.component
                    ));
                }
            }
            self.graph.processes.insert(name.clone(), Process { component, metadata });
            Ok(name)
        } else {
            match name {
                Some(n) => Ok(n),
                None => self.fail("expected a process"),
            }
        }
    }

    /// `[PORT] node [PORT]` as it appears in a chain.
    fn node_use(&mut self, with_inport: bool) -> Result<NodeUse, ParseError> {
        let inport = if with_inport { Some(self.port()?) } else { None };
        let process = self.node()?;
        let outport = match self.peek() {
            Some(Tok::Word(_)) => Some(self.port()?),
            _ => None,
        };
        Ok(NodeUse { process, inport, outport })
    }

    fn export(&mut self, inport: bool) -> Result<(), ParseError> {
        self.expect(Tok::Equals, "'='")?;
        let target = self.word("PROCESS.PORT")?;
        let Some((process, port)) = target.rsplit_once('.') else {
            return self.fail(&format!("expected PROCESS.PORT, found {target:?}"));
        };
        self.expect(Tok::Colon, "':' and the exported name")?;
        let name = self.word("the exported name")?;
        let e = Export { process: process.to_owned(), port: port.to_lowercase() };
        if inport {
            self.graph.inports.insert(name.to_lowercase(), e);
        } else {
            self.graph.outports.insert(name.to_lowercase(), e);
        }
        Ok(())
    }

    fn chain(&mut self) -> Result<(), ParseError> {
        // Source: an IIP or a node with an outport.
        let mut iip = None;
        let mut prev: Option<NodeUse> = None;
        if let Some(Tok::Quoted(s)) = self.peek() {
            iip = Some(s.clone());
            self.pos += 1;
        } else {
            let n = self.node_use(false)?;
            if self.peek() != Some(&Tok::Arrow) {
                // A lone node declaration: `a(Component)`.
                if n.outport.is_some() {
                    return self.fail("expected '->' after the outport");
                }
                return Ok(());
            }
            prev = Some(n);
        }
        if self.peek() != Some(&Tok::Arrow) {
            return self.fail(&format!("expected '->', found {}", self.describe()));
        }
        while self.peek() == Some(&Tok::Arrow) {
            self.pos += 1;
            let tgt = self.node_use(true)?;
            let (port, index) = tgt.inport.clone().expect("parsed with an inport");
            let tgt_ref = PortRef { process: tgt.process.clone(), port, index };
            let conn = match (&prev, iip.take()) {
                (_, Some(data)) => Connection { src: None, data: Some(data.into()), tgt: tgt_ref, metadata: Default::default() },
                (Some(p), None) => {
                    let Some((port, index)) = p.outport.clone() else {
                        return self.fail(&format!("process {:?} needs an outport before '->'", p.process));
                    };
                    Connection {
                        src: Some(PortRef { process: p.process.clone(), port, index }),
                        data: None,
                        tgt: tgt_ref,
                        metadata: Default::default(),
                    }
                }
                (None, None) => unreachable!("a chain starts with an IIP or a node"),
            };
            self.graph.connections.push(conn);
            let has_out = tgt.outport.is_some();
            prev = Some(tgt);
            if has_out && self.peek() != Some(&Tok::Arrow) {
                return self.fail("expected '->' after the outport");
            }
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<(), ParseError> {
        match self.peek() {
            Some(Tok::Word(w)) if (w == "INPORT" || w == "OUTPORT") && self.toks.get(self.pos + 1).map(|t| &t.tok) == Some(&Tok::Equals) => {
                let inport = w == "INPORT";
                self.pos += 1;
                self.export(inport)
            }
            _ => self.chain(),
        }
    }

    fn file(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                None => return Ok(()),
                Some(Tok::Newline) | Some(Tok::Comma) => {
                    self.pos += 1;
                }
                _ => {
                    self.statement()?;
                    match self.peek() {
                        None | Some(Tok::Newline) | Some(Tok::Comma) => {}
                        _ => return self.fail(&format!("unexpected {} after a statement", self.describe())),
                    }
                }
            }
        }
    }
}

/// Parse `.fbp` text into a graph.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut graph = Graph::default();
    let toks = lex(text, &mut graph)?;
    let mut p = Parser { toks, pos: 0, graph, anonymous: 0 };
    p.file()?;
    let _ = p.next();
    p.graph.validate_in(text, false)?;
    Ok(p.graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    type End = (String, String, Option<u32>);

    /// (source, IIP text, target) of connection `i`.
    fn conn(g: &Graph, i: usize) -> (Option<End>, Option<String>, End) {
        let c = &g.connections[i];
        (
            c.src.as_ref().map(|s| (s.process.clone(), s.port.clone(), s.index)),
            c.data.as_ref().and_then(|d| d.as_str().map(str::to_owned)),
            (c.tgt.process.clone(), c.tgt.port.clone(), c.tgt.index),
        )
    }

    #[test]
    fn processes_iips_chains_and_case() {
        let g = parse(
            "# @runtime msgflo\n\
             # a comment\n\
             '{\"temperature\": 22.3}' -> IN sensor(TemperatureSensor)\n\
             sensor OUT -> IN fmt(Format) OUT -> In display(Display) # trailing comment\n",
        )
        .unwrap();
        assert_eq!(g.properties["runtime"], "msgflo");
        assert_eq!(g.processes["sensor"].component, "TemperatureSensor");
        assert_eq!(g.processes.len(), 3);
        assert_eq!(conn(&g, 0), (None, Some("{\"temperature\": 22.3}".into()), ("sensor".into(), "in".into(), None)));
        assert_eq!(conn(&g, 1).0, Some(("sensor".into(), "out".into(), None)));
        assert_eq!(conn(&g, 2), (Some(("fmt".into(), "out".into(), None)), None, ("display".into(), "in".into(), None)));
        assert_eq!(g.connections[0].iip_payload().unwrap().as_bytes(), b"{\"temperature\": 22.3}");
    }

    #[test]
    fn exports_indices_metadata_anonymous_and_commas() {
        let g = parse(
            "INPORT=split.IN:INPUT\nOUTPORT=join.OUT:RESULT\n\
             split(Split:workers=2) OUT[1] -> IN[0] join(msgflo/Join), join OUT -> IN (Display)\n\
             'it''s' -> IN x(Y)",
        );
        // 'it''s' is two IIPs back to back: not valid.
        assert!(g.is_err());
        let g = parse(
            "INPORT=split.IN:INPUT\nOUTPORT=join.OUT:RESULT\n\
             split(Split:workers=2) OUT[1] -> IN[0] join(msgflo/Join), join OUT -> IN (Display)\n\
             'it\\'s' -> IN x(Y)",
        )
        .unwrap();
        assert_eq!(g.inports["input"], Export { process: "split".into(), port: "in".into() });
        assert_eq!(g.outports["result"].process, "join");
        assert_eq!(g.processes["split"].metadata["workers"], "2");
        assert_eq!(g.processes["join"].component, "msgflo/Join");
        assert_eq!(conn(&g, 0), (Some(("split".into(), "out".into(), Some(1))), None, ("join".into(), "in".into(), Some(0))));
        let anon = &g.connections[1].tgt.process;
        assert_eq!(g.processes[anon].component, "Display");
        assert_eq!(conn(&g, 2).1.as_deref(), Some("it's"));
    }

    #[test]
    fn arrow_at_line_end_continues() {
        let g = parse("a(A) OUT ->\n  IN b(B)\n").unwrap();
        assert_eq!(g.connections.len(), 1);
    }

    #[test]
    fn errors_give_line_and_column() {
        let cases = [
            ("a(A) OUT -> IN b(B)\nc(C) OUT IN d(D)", 2),
            ("'unterminated -> IN a(A)", 1),
            ("a(A) OUT -> (B)", 1),
            ("a(A)\na(B)", 2),
            ("x OUT -> IN y", 1),
            ("a(A) OUT[x] -> IN b(B)", 1),
            ("a(A) ; b", 1),
        ];
        for (text, line) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.column >= 1);
        }
        let e = parse("a(A) OUT -> IN b(B)\nc(C) OUT IN d(D)").unwrap_err();
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.to_string().starts_with("2:10: "), "{e}");
        // Validation (an exported port of a process never declared) points
        // at the name, not 1:1.
        let e = parse("a(A) OUT -> IN b(B)\nINPORT=nope.IN:START").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert!(e.message.contains("undeclared process"), "{e}");
    }
}

#[cfg(test)]
mod original_graphs {
    /// The graphs shipped with the original msgflo (interop/, when installed).
    #[test]
    fn original_example_graphs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/node_modules/msgflo");
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && p.file_name().is_some_and(|n| n != "node_modules") {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "fbp") {
                    files.push(p);
                }
            }
        }
        if files.is_empty() && std::env::var("MSGFLO_SKIP_INTEROP").as_deref() != Ok("1") {
            panic!("no original graphs found: run `npm ci --prefix interop` (or set MSGFLO_SKIP_INTEROP=1)");
        }
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if let Err(e) = super::parse(&text) {
                panic!("{}: {e}", f.display());
            }
        }
        eprintln!("parsed {} original graphs", files.len());
    }
}

/// Write a graph in the `.fbp` DSL (for `msgflo run --auto-save`). Graph
/// properties with text values become `# @key value` annotations; node and
/// edge metadata, which the DSL cannot carry beyond `key=value` text, is
/// left out. IIP text with a line break is written as JSON text.
pub fn write(graph: &Graph) -> String {
    let mut out = String::new();
    for (k, v) in &graph.properties {
        if let Some(s) = v.as_str().filter(|s| !s.contains('\n') && !k.contains(char::is_whitespace) && !k.is_empty()) {
            out.push_str(&format!("# @{k} {s}\n"));
        }
    }
    for (name, e) in &graph.inports {
        out.push_str(&format!("INPORT={}.{}:{}\n", e.process, e.port.to_uppercase(), name.to_uppercase()));
    }
    for (name, e) in &graph.outports {
        out.push_str(&format!("OUTPORT={}.{}:{}\n", e.process, e.port.to_uppercase(), name.to_uppercase()));
    }
    let end = |p: &PortRef| match p.index {
        Some(i) => format!("{}[{i}]", p.port.to_uppercase()),
        None => p.port.to_uppercase(),
    };
    for (name, p) in &graph.processes {
        out.push_str(&format!("{name}({})\n", p.component));
    }
    for c in &graph.connections {
        match &c.src {
            Some(s) => out.push_str(&format!("{} {} -> {} {}\n", s.process, end(s), end(&c.tgt), c.tgt.process)),
            None => {
                let text = match c.data.as_ref() {
                    Some(serde_json::Value::String(s)) if !s.contains('\n') => s.clone(),
                    Some(v) => serde_json::to_string(v).unwrap_or_default(),
                    None => continue,
                };
                out.push_str(&format!("'{}' -> {} {}\n", text.replace('\'', "\\'"), end(&c.tgt), c.tgt.process));
            }
        }
    }
    out
}

#[cfg(test)]
mod write_tests {
    #[test]
    fn written_graphs_read_back_the_same() {
        let text = "# @runtime msgflo\nINPORT=a.IN:START\n'it''s' -> IN a(Repeat)\n'{\"x\": 1}' -> CONF b(examples/Drop)\na OUT -> IN[2] b\nlonely(Thing)\n";
        let g = super::parse(&text.replace("''", "\\'")).unwrap();
        let again = super::parse(&super::write(&g)).unwrap();
        assert_eq!(g, again);
        assert!(g.processes.contains_key("lonely"));
    }
}
