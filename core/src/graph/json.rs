//! The JSON graph format (as produced by the flowbased `fbp` parser and
//! Flowhub): `{properties, processes: {name: {component, metadata}},
//! connections: [{src: {process, port, index?}, tgt} | {data, tgt}],
//! inports, outports}`. Port names are stored lower-case, as in `.fbp`.

use super::{Graph, ParseError};

/// Parse JSON graph text; errors give line and column.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut g: Graph = serde_json::from_str(text).map_err(|e| ParseError {
        line: e.line().max(1),
        column: e.column().max(1),
        message: e.to_string(),
    })?;
    for c in &mut g.connections {
        if let Some(s) = &mut c.src {
            s.port = s.port.to_lowercase();
        }
        c.tgt.port = c.tgt.port.to_lowercase();
    }
    for e in g.inports.values_mut().chain(g.outports.values_mut()) {
        e.port = e.port.to_lowercase();
    }
    g.validate_in(text, true)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_graph_as_the_dsl() {
        let from_fbp = super::super::fbp::parse("'5' -> IN a(A)\na OUT -> IN b(B)\nINPORT=a.IN:START").unwrap();
        let json = serde_json::to_string(&from_fbp).unwrap();
        assert_eq!(parse(&json).unwrap(), from_fbp);
        let text = r#"{"processes": {"a": {"component": "A"}, "b": {"component": "B"}},
            "connections": [{"data": 5, "tgt": {"process": "a", "port": "IN"}},
                            {"src": {"process": "a", "port": "OUT", "index": 2}, "tgt": {"process": "b", "port": "in"}}]}"#;
        let g = parse(text).unwrap();
        assert_eq!(g.connections[1].src.as_ref().unwrap().port, "out");
        assert_eq!(g.connections[1].src.as_ref().unwrap().index, Some(2));
        assert_eq!(g.connections[0].iip_payload().unwrap().as_bytes(), b"5");
    }

    #[test]
    fn broken_json_gives_position_and_bad_references_are_refused() {
        let e = parse("{\n  \"processes\": {,\n}").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse(r#"{"connections": [{"src": {"process": "x", "port": "out"}, "tgt": {"process": "y", "port": "in"}}]}"#).unwrap_err();
        assert!(e.message.contains("undeclared process"), "{e}");
        let e = parse("{\"processes\": {\"a\": {\"component\": \"A\"}},\n \"connections\": [\n  {\"data\": 1, \"tgt\": {\"process\": \"nope\", \"port\": \"in\"}}]}").unwrap_err();
        assert_eq!((e.line, e.column), (3, 34), "the real place, not 1:1: {e}");
    }
}
