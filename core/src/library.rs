//! The component library: how to start a participant for a component.
//!
//! The original's configuration, at the top level of a JSON file or under
//! the `msgflo` key of a package.json:
//!
//! ```json
//! { "msgflo": {
//!     "namespace": "myproject",
//!     "components": { "myproject/Repeat": "python3 repeat.py #ROLE" },
//!     "handlers": { ".py": "msgflo-python #FILENAME #ROLE" },
//!     "variables": { "PY": "python3" } } }
//! ```
//!
//! Templates substitute `#ROLE`, `#IIPS` (JSON of the role's IIPs),
//! `#FILENAME`, `#COMPONENT`, `#COMPONENTNAME` and `#VARIABLE` for each user
//! variable. Unlike the original, a template is split into arguments once,
//! honouring quotes, *before* substitution: a value with spaces stays one
//! argument, and nothing is passed through a shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::graph::Graph;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Library {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    #[serde(default)]
    pub handlers: BTreeMap<String, String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Where component files (`NAME.py`, `NAME.js`, ...) are looked up.
    #[serde(skip)]
    pub component_dir: Option<PathBuf>,
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Handlers for component files when the configuration names none.
pub fn default_handlers() -> BTreeMap<String, String> {
    [
        (".py", "msgflo-python #FILENAME #ROLE"),
        (".js", "msgflo-nodejs --name #ROLE #FILENAME"),
        (".coffee", "msgflo-nodejs --name #ROLE #FILENAME"),
        (".yml", "msgflo register --role #ROLE:#FILENAME"),
        (".yaml", "msgflo register --role #ROLE:#FILENAME"),
        // An executable without extension (a compiled participant, such as
        // one built on this crate): run it with the role.
        ("", "#FILENAME #ROLE"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidDefinition(msg.into())
}

/// Split a command template into arguments: whitespace separates, '...'
/// and "..." quote (with \" and \\ inside double quotes), \ escapes outside.
/// Not the `shlex` crate: it follows the shell in reading a word that starts
/// with `#` as a comment, which would drop every `#ROLE` of a template.
pub fn split_command(template: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err(bad(format!("unterminated ' in command {template:?}"))),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err(bad(format!("unterminated \" in command {template:?}"))),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err(bad(format!("unterminated \" in command {template:?}"))),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    cur.push(ch);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    if args.is_empty() {
        return Err(bad(format!("empty command {template:?}")));
    }
    Ok(args)
}

/// Replace the `#NAME`s of one argument in a single pass, longest name
/// first at each `#` (so `#COMPONENTNAME` is not read as `#COMPONENT`);
/// what a value brings in is never substituted again (an IIP
/// `"literal #ROLE"` stays literal).
fn substitute(arg: &str, values: &[(String, String)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('#') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match values.iter().find(|(k, _)| tail.starts_with(k.as_str())) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len()..];
            }
            None => {
                out.push('#');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Library {
    /// Parse a library configuration (top level, or under `msgflo` as in a
    /// package.json). Handlers default to [`default_handlers`] for the
    /// extensions the configuration does not name.
    pub fn from_json(text: &str) -> Result<Library> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("library: {e}")))?;
        let section = v.get("msgflo").cloned().unwrap_or(v);
        let mut lib: Library = serde_json::from_value(section).map_err(|e| bad(format!("library: {e}")))?;
        for (ext, cmd) in default_handlers() {
            lib.handlers.entry(ext).or_insert(cmd);
        }
        for (name, template) in lib.components.iter().chain(&lib.handlers) {
            split_command(template).map_err(|e| bad(format!("library entry {name:?}: {e}")))?;
        }
        Ok(lib)
    }

    /// Read a library file; component files are looked up in the folder
    /// `components` beside it unless `component_dir` is set later.
    pub fn from_file(path: &Path) -> Result<Library> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read library {}: {e}", path.display())))?;
        let mut lib = Self::from_json(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        lib.component_dir = path.parent().map(|p| p.join("components"));
        Ok(lib)
    }

    /// The name without this library's namespace prefix.
    fn short_name<'a>(&self, component: &'a str) -> &'a str {
        match &self.namespace {
            Some(ns) => component.strip_prefix(&format!("{ns}/")).unwrap_or(component),
            None => component,
        }
    }

    /// The command (program and arguments) that starts `component` as `role`.
    pub fn command(&self, component: &str, role: &str, iips: &serde_json::Value) -> Result<Vec<String>> {
        let short = self.short_name(component);
        let qualified = self.namespace.as_ref().map(|ns| format!("{ns}/{short}"));
        let found = self
            .components
            .get(component)
            .or_else(|| self.components.get(short))
            .or_else(|| qualified.as_ref().and_then(|q| self.components.get(q)));
        let (template, filename) = if let Some(t) = found {
            (t.clone(), String::new())
        } else {
            let file = self.component_file(short).ok_or_else(|| {
                let known: Vec<&str> = self.components.keys().map(String::as_str).collect();
                bad(format!("unknown component {component:?} (library has: {}; no file for it in {})",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                    self.component_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "no component folder".into())))
            })?;
            let ext = file.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
            let t = self.handlers.get(&ext).cloned().ok_or_else(|| bad(format!("no handler for {ext:?} files ({})", file.display())))?;
            (t, file.display().to_string())
        };
        let mut values: Vec<(String, String)> = vec![
            ("#ROLE".into(), role.into()),
            ("#IIPS".into(), iips.to_string()),
            ("#FILENAME".into(), filename),
            ("#COMPONENTNAME".into(), short.rsplit('/').next().unwrap_or(short).into()),
            ("#COMPONENT".into(), component.into()),
        ];
        values.extend(self.variables.iter().map(|(k, v)| (format!("#{k}"), v.clone())));
        // Longest names first, so #COMPONENTNAME is not read as #COMPONENT.
        values.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        Ok(split_command(&template)?
            .into_iter()
            .map(|arg| substitute(&arg, &values))
            .collect())
    }

    fn component_file(&self, name: &str) -> Option<PathBuf> {
        let dir = self.component_dir.as_ref()?;
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_stem().is_some_and(|s| s == name))
            .filter(|p| match p.extension() {
                Some(e) => self.handlers.contains_key(&format!(".{}", e.to_string_lossy())),
                None => self.handlers.contains_key("") && is_executable(p),
            })
            .collect();
        found.sort();
        found.into_iter().next()
    }

    /// The components whose files are in the component folder (names with
    /// this library's namespace, as a graph names them).
    pub fn component_files(&self) -> Vec<String> {
        let Some(dir) = &self.component_dir else { return Vec::new() };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?.to_owned();
                self.component_file(&stem).filter(|f| *f == p).map(|_| self.qualified(&stem))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn qualified(&self, short: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{short}"),
            None => short.to_owned(),
        }
    }

    /// A component's source file: its language and text. Only files of the
    /// component folder are read.
    pub fn source_of(&self, component: &str) -> Result<(String, String)> {
        let short = source_name(self.short_name(component))?;
        let file = self.component_file(short).ok_or_else(|| bad(format!("no source file for component {component:?} in the component folder")))?;
        let code = std::fs::read_to_string(&file).map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
        let ext = file.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        Ok((language_of(&ext).to_owned(), code))
    }

    /// Write a component's source into the component folder as
    /// `NAME.<extension of the language>` (atomically), so that a graph can
    /// use it at once: component files are looked up when a participant
    /// starts. The name is one plain word (letters, digits, `_`, `-`): it
    /// can never leave the folder. Returns the file written.
    pub fn write_source(&self, component: &str, language: &str, code: &str) -> Result<PathBuf> {
        let short = source_name(self.short_name(component))?;
        let ext = extension_of(language)
            .ok_or_else(|| bad(format!("cannot run components written in {language:?} (python, javascript, coffeescript or yaml)")))?;
        if !self.handlers.contains_key(&format!(".{ext}")) {
            return Err(bad(format!("the library has no handler for .{ext} files")));
        }
        let dir = self.component_dir.as_ref().ok_or_else(|| bad("no component folder: run with a library file (msgflo.json) beside it".to_owned()))?;
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        // Another file of the same name would be found first or instead.
        if let Some(other) = self.component_file(short).filter(|f| f.extension().and_then(|e| e.to_str()) != Some(ext)) {
            return Err(bad(format!("component {short:?} exists as {} already", other.display())));
        }
        let path = dir.join(format!("{short}.{ext}"));
        let tmp = dir.join(format!(".{short}.{ext}.{}", std::process::id()));
        std::fs::write(&tmp, code).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    /// A Procfile: one `role: command` line per process of the graph
    /// (arguments quoted for a POSIX shell).
    pub fn procfile(&self, graph: &Graph) -> Result<String> {
        let mut out = String::new();
        for (role, process) in &graph.processes {
            if process.component == "msgflo/RoundRobin" {
                continue; // an edge, not a participant
            }
            let iips: serde_json::Map<String, serde_json::Value> = graph
                .connections
                .iter()
                .filter(|c| c.src.is_none() && c.tgt.process == *role)
                .filter_map(|c| Some((c.tgt.port.clone(), c.data.clone()?)))
                .collect();
            let cmd = self.command(&process.component, role, &serde_json::Value::Object(iips))?;
            let quoted: Vec<String> = cmd.iter().map(|a| shell_quote(a)).collect();
            out.push_str(&format!("{role}: {}\n", quoted.join(" ")));
        }
        Ok(out)
    }
}

/// A component name that is safe as a file name in the component folder.
fn source_name(name: &str) -> Result<&str> {
    let short = name.rsplit('/').next().unwrap_or(name);
    let ok = !short.is_empty() && short.len() <= 100 && short.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && name.matches('/').count() <= 1;
    if ok && !name.contains("..") {
        Ok(short)
    } else {
        Err(bad(format!("component name {name:?} is not a plain name (letters, digits, _ and - only)")))
    }
}

/// File extensions of the languages component sources can be written in.
const LANGUAGES: [(&str, &str); 5] = [("python", "py"), ("javascript", "js"), ("coffeescript", "coffee"), ("yaml", "yml"), ("yaml", "yaml")];

fn extension_of(language: &str) -> Option<&'static str> {
    let l = language.to_ascii_lowercase();
    LANGUAGES.iter().find(|(lang, ext)| *lang == l || *ext == l).map(|(_, ext)| *ext)
}

fn language_of(ext: &str) -> &'static str {
    LANGUAGES.iter().find(|(_, e)| *e == ext).map(|(l, _)| *l).unwrap_or("executable")
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,#".contains(c)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_substituted_once() {
        let lib = Library::from_json(r##"{"components": {"R": "run #ROLE --iips #IIPS #NOPE #"}, "variables": {"X": "#ROLE"}}"##).unwrap();
        let iips = serde_json::json!({"in": "literal #ROLE #IIPS #X"});
        let cmd = lib.command("R", "r1", &iips).unwrap();
        assert_eq!(cmd, ["run", "r1", "--iips", "{\"in\":\"literal #ROLE #IIPS #X\"}", "#NOPE", "#"]);
        let lib = Library::from_json(r##"{"components": {"R": "run #X#ROLE"}, "variables": {"X": "#ROLE-"}}"##).unwrap();
        assert_eq!(lib.command("R", "r1", &iips).unwrap(), ["run", "#ROLE-r1"]);
    }

    #[test]
    fn splits_without_breaking_quoted_arguments() {
        assert_eq!(split_command("a  'b c' \"d \\\"e\\\"\" f\\ g").unwrap(), ["a", "b c", "d \"e\"", "f g"]);
        assert!(split_command("a 'open").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn components_variables_and_namespace() {
        let lib = Library::from_json(
            r##"{"msgflo": {"namespace": "proj",
                "components": {"proj/Repeat": "#PY '/opt/my dir/repeat.py' #ROLE --iips #IIPS", "Other": "run #COMPONENT #COMPONENTNAME"},
                "variables": {"PY": "python3"}}}"##,
        )
        .unwrap();
        let iips = serde_json::json!({"in": "5"});
        assert_eq!(
            lib.command("proj/Repeat", "my role", &iips).unwrap(),
            ["python3", "/opt/my dir/repeat.py", "my role", "--iips", "{\"in\":\"5\"}"]
        );
        assert_eq!(lib.command("Repeat", "r", &iips).unwrap()[0], "python3", "namespace prefix optional");
        assert_eq!(lib.command("Other", "r", &iips).unwrap(), ["run", "Other", "Other"]);
        let e = lib.command("Nope", "r", &iips).unwrap_err();
        assert!(e.to_string().contains("unknown component \"Nope\""), "{e}");
    }

    #[test]
    fn sources_are_written_and_read_inside_the_component_folder_only() {
        let dir = std::env::temp_dir().join(format!("msgflo-lib-{}", uuid::Uuid::new_v4().simple()));
        let mut lib = Library::from_json(r#"{"namespace": "ns"}"#).unwrap();
        lib.component_dir = Some(dir.join("components"));
        let path = lib.write_source("ns/Shout", "python", "print('hi')\n").unwrap();
        assert_eq!(path, dir.join("components/Shout.py"));
        assert_eq!(lib.source_of("ns/Shout").unwrap(), ("python".to_owned(), "print('hi')\n".to_owned()));
        assert_eq!(lib.component_files(), vec!["ns/Shout".to_owned()]);
        // Usable at once: the command finds the file.
        let cmd = lib.command("ns/Shout", "s", &serde_json::json!({})).unwrap();
        assert!(cmd.iter().any(|a| a.ends_with("components/Shout.py")), "{cmd:?}");
        // Rewritten in place; another language for the same name is refused.
        lib.write_source("Shout", "py", "print('again')\n").unwrap();
        assert!(lib.write_source("Shout", "javascript", "x").unwrap_err().to_string().contains("exists as"));
        for evil in ["../evil", "a/../../b", "/etc/passwd", "x/y/z", "", ".hidden", "a b", "ns/..", "a\\b"] {
            let e = lib.write_source(evil, "python", "x").unwrap_err().to_string();
            assert!(e.contains("not a plain name"), "{evil:?}: {e}");
            assert!(lib.source_of(evil).is_err());
        }
        assert!(lib.write_source("Ok", "cobol", "x").unwrap_err().to_string().contains("cannot run components written in"));
        assert!(!dir.join("evil.py").exists() && !dir.join("components/evil.py").exists());
        lib.component_dir = None;
        assert!(lib.write_source("Shout", "python", "x").unwrap_err().to_string().contains("no component folder"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn component_files_use_handlers() {
        let dir = std::env::temp_dir().join(format!("msgflo-lib-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("components")).unwrap();
        std::fs::write(dir.join("components/Upper.py"), "").unwrap();
        std::fs::write(dir.join("library.json"), r#"{"components": {}}"#).unwrap();
        let lib = Library::from_file(&dir.join("library.json")).unwrap();
        let cmd = lib.command("Upper", "up", &serde_json::json!({})).unwrap();
        assert_eq!(cmd[0], "msgflo-python");
        assert!(cmd[1].ends_with("components/Upper.py"), "{cmd:?}");
        assert_eq!(cmd[2], "up");
        // An executable without extension runs as it is; YAML is registered.
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("components/Native"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("components/Native"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("components/NotExec"), "").unwrap();
        let cmd = lib.command("Native", "n", &serde_json::json!({})).unwrap();
        assert!(cmd[0].ends_with("components/Native") && cmd[1] == "n", "{cmd:?}");
        assert!(lib.command("NotExec", "n", &serde_json::json!({})).is_err());
        std::fs::write(dir.join("components/Mailer.yml"), "").unwrap();
        let cmd = lib.command("Mailer", "m", &serde_json::json!({})).unwrap();
        assert_eq!(&cmd[..3], ["msgflo", "register", "--role"]);
        assert!(cmd[3].starts_with("m:") && cmd[3].ends_with("components/Mailer.yml"), "{cmd:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn procfile_for_a_graph() {
        let lib = Library::from_json(r##"{"components": {"A": "a-bin #ROLE #IIPS", "B": "b bin"}}"##).unwrap();
        let g = crate::graph::fbp::parse("'x y' -> IN one(A) OUT -> IN two(B)").unwrap();
        assert_eq!(lib.procfile(&g).unwrap(), "one: a-bin one '{\"in\":\"x y\"}'\ntwo: b bin\n");
        assert!(Library::from_json(r#"{"components": {"A": "'unterminated"}}"#).is_err());
        assert!(Library::from_json("{not json").is_err());
    }
}
