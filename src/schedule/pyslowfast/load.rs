//! PySlowFast's config as its loader builds it (`slowfast/utils/parser.py` load_config on
//! fvcore's CfgNode): the defaults, a YAML file merged over them after its `_BASE_` files, the
//! command line's KEY VALUE opts merged over that, then `assert_and_infer_cfg`. Values follow
//! yacs: a string is read as a Python literal when it is one (`"[0, 1]"`, `True`, `1e-4`), a
//! key must exist in the defaults, and a value must have its default's type (an integer where
//! a float is expected is taken, which yacs refuses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{config_err, Error, Result};

/// PySlowFast's `get_cfg()`, written by `scripts/pyslowfast_fixture.py config` from the
/// SlowFast commit it names.
const DEFAULTS_JSON: &str = include_str!("defaults.json");

/// `_BASE_` files deeper than this are taken for a cycle.
const MAX_BASE_DEPTH: usize = 32;

pub(super) fn defaults() -> Result<&'static BTreeMap<String, Value>> {
    static DEFAULTS: OnceLock<std::result::Result<BTreeMap<String, Value>, String>> =
        OnceLock::new();
    #[derive(Deserialize)]
    struct File {
        keys: Vec<(String, Value)>,
    }
    DEFAULTS
        .get_or_init(|| {
            serde_json::from_str::<File>(DEFAULTS_JSON)
                .map(|f| f.keys.into_iter().collect())
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Internal(format!("PySlowFast's defaults (defaults.json): {e}")))
}

/// PySlowFast's whole config: every key of its defaults (`SECTION.KEY`, or `KEY` for the
/// top-level ones) with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct PySlowFastCfg {
    values: BTreeMap<String, Value>,
}

impl PySlowFastCfg {
    /// PySlowFast's defaults.
    pub fn defaults() -> Result<PySlowFastCfg> {
        Ok(PySlowFastCfg {
            values: defaults()?.clone(),
        })
    }

    /// What `tools/run_net.py --cfg path opts...` configures: the YAML at `path` (with its
    /// `_BASE_` files) and the KEY VALUE `opts` over the defaults, then assert_and_infer_cfg
    /// (its checks, and SOLVER.BASE_LR_SCALE_NUM_SHARDS). Errors name the file and the key.
    pub fn load(path: &Path, opts: &[(String, String)]) -> Result<PySlowFastCfg> {
        let mut cfg = PySlowFastCfg::defaults()?;
        let tree = load_with_base(path, 0)?;
        cfg.merge_tree(tree, "")
            .map_err(|e| config_err(format!("{}: {}", path.display(), message(e))))?;
        for (key, value) in opts {
            if key == "_BASE_" {
                return Err(config_err("_BASE_ can only be used in files"));
            }
            cfg.set(key, Value::String(value.clone()))?;
        }
        cfg.infer()?;
        Ok(cfg)
    }

    /// The value of `key`, when PySlowFast has that key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Every key with its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys whose value differs from PySlowFast's default, with their values.
    pub fn changed(&self) -> Result<Vec<(&str, &Value)>> {
        let defaults = defaults()?;
        Ok(self
            .iter()
            .filter(|(k, v)| defaults.get(*k).is_none_or(|d| !same(v, d)))
            .collect())
    }

    /// Sets `key` as yacs' merge does: `raw` decoded (a string that is a Python literal
    /// becomes its value), then checked against the default's type.
    pub fn set(&mut self, key: &str, raw: Value) -> Result<()> {
        let defaults = defaults()?;
        let Some(default) = defaults.get(key) else {
            return Err(unknown_key(key, defaults));
        };
        let value = coerce(key, decode(raw), default)?;
        self.values.insert(key.to_string(), value);
        Ok(())
    }

    /// Merges a YAML mapping: sections recurse, leaves are set.
    fn merge_tree(&mut self, tree: Map<String, Value>, prefix: &str) -> Result<()> {
        let defaults = defaults()?;
        for (k, v) in tree {
            let key = format!("{prefix}{k}");
            match v {
                Value::Object(inner) if is_section(&key, defaults) => {
                    self.merge_tree(inner, &format!("{key}."))?
                }
                Value::Object(_) if defaults.contains_key(&key) => {
                    return Err(config_err(format!(
                        "{key} is a value in PySlowFast's config, not a section"
                    )))
                }
                v => self.set(&key, v)?,
            }
        }
        Ok(())
    }

    /// assert_and_infer_cfg: the checks that concern what we read, and the LR scaling by
    /// NUM_SHARDS.
    fn infer(&mut self) -> Result<()> {
        let gpus = self.int("NUM_GPUS")?;
        let shards = self.int("NUM_SHARDS")?;
        if gpus < 0 || shards < 1 || !(0..shards).contains(&self.int("SHARD_ID")?) {
            return Err(config_err(format!(
                "NUM_GPUS {gpus} must be >= 0, NUM_SHARDS {shards} >= 1 and SHARD_ID below it"
            )));
        }
        for key in ["TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE"] {
            let b = self.int(key)?;
            if b < 1 || (gpus > 0 && b % gpus != 0) {
                return Err(config_err(format!(
                    "{key} {b} must be a positive multiple of NUM_GPUS {gpus} (PySlowFast's \
                     batch per GPU is {key} / NUM_GPUS)"
                )));
            }
        }
        for key in ["TRAIN.CHECKPOINT_TYPE", "TEST.CHECKPOINT_TYPE"] {
            let t = self.str(key)?;
            if t != "pytorch" && t != "caffe2" {
                return Err(config_err(format!(
                    "{key} must be pytorch or caffe2, got {t:?}"
                )));
            }
        }
        if self.bool("SOLVER.BASE_LR_SCALE_NUM_SHARDS")? {
            for key in [
                "SOLVER.BASE_LR",
                "SOLVER.WARMUP_START_LR",
                "SOLVER.COSINE_END_LR",
            ] {
                let lr = self.float(key)? * shards as f64;
                self.values.insert(key.to_string(), Value::from(lr));
            }
        }
        Ok(())
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.values
            .get(key)
            .ok_or_else(|| Error::Internal(format!("{key} is not in PySlowFast's defaults")))
    }

    fn typed<T>(&self, key: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> Result<T> {
        let v = self.value(key)?;
        f(v).ok_or_else(|| config_err(format!("{key} must be {what}, got {v}")))
    }

    pub(super) fn int(&self, key: &str) -> Result<i64> {
        self.typed(key, "an integer", Value::as_i64)
    }

    pub(super) fn float(&self, key: &str) -> Result<f64> {
        self.typed(key, "a number", Value::as_f64)
    }

    pub(super) fn bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "True or False", Value::as_bool)
    }

    pub(super) fn str(&self, key: &str) -> Result<&str> {
        let v = self.value(key)?;
        v.as_str()
            .ok_or_else(|| config_err(format!("{key} must be a string, got {v}")))
    }
}

/// Pairs the trailing KEY VALUE arguments of `run_net.py`-style command lines (yacs'
/// merge_from_list), e.g. `MULTIGRID.LONG_CYCLE True TRAIN.BATCH_SIZE 64`.
pub fn opts_from_args<S: AsRef<str>>(args: &[S]) -> Result<Vec<(String, String)>> {
    if args.len() % 2 != 0 {
        return Err(config_err(format!(
            "PySlowFast options come in KEY VALUE pairs; {} has no value",
            args[args.len() - 1].as_ref()
        )));
    }
    Ok(args
        .chunks(2)
        .map(|kv| (kv[0].as_ref().to_string(), kv[1].as_ref().to_string()))
        .collect())
}

/// The message of a config error, without the variant's own prefix.
fn message(e: Error) -> String {
    match e {
        Error::Config(m) => m,
        other => other.to_string(),
    }
}

fn is_section(key: &str, defaults: &BTreeMap<String, Value>) -> bool {
    let prefix = format!("{key}.");
    defaults
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

fn unknown_key(key: &str, defaults: &BTreeMap<String, Value>) -> Error {
    if is_section(key, defaults) {
        return config_err(format!(
            "{key} is a section of PySlowFast's config, not a key"
        ));
    }
    config_err(format!(
        "{key}: not a key of PySlowFast's config (slowfast/config/defaults.py)"
    ))
}

/// Whether two config values are equal, numbers compared as numbers (1 == 1.0).
pub(super) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// yacs' _check_and_coerce_cfg_value_type, taking an integer for a float too.
fn coerce(key: &str, v: Value, default: &Value) -> Result<Value> {
    let kind = |v: &Value| match v {
        Value::Null => "None",
        Value::Bool(_) => "True or False",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a section",
    };
    match (default, &v) {
        (Value::Null, _) | (_, Value::Null) => return Ok(v),
        (Value::Number(d), Value::Number(n)) if d.is_f64() => {
            return Ok(n.as_f64().map_or(v.clone(), Value::from))
        }
        (Value::Number(_), Value::Number(n)) if !n.is_f64() => return Ok(v),
        (Value::Number(_), Value::Number(n)) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                return Ok(Value::from(f as i64));
            }
        }
        (Value::Bool(_), Value::Bool(_))
        | (Value::String(_), Value::String(_))
        | (Value::Array(_), Value::Array(_)) => return Ok(v),
        _ => {}
    }
    Err(config_err(format!(
        "{key} must be {} (PySlowFast's default is {default}), got {v}",
        kind(default)
    )))
}

/// yacs' _decode_cfg_value: a string that is a Python literal becomes its value.
fn decode(raw: Value) -> Value {
    match raw {
        Value::String(s) => literal(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

/// Python's ast.literal_eval for what configs hold: numbers, quoted strings, True, False,
/// None, and lists and tuples of them; None when `s` is none of these.
fn literal(s: &str) -> Option<Value> {
    let mut p = Literal {
        s: s.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.skip_space();
    (p.i == p.s.len()).then_some(v)
}

struct Literal<'a> {
    s: &'a [u8],
    i: usize,
}

impl Literal<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_space();
        match *self.s.get(self.i)? {
            b'[' => self.sequence(b']'),
            b'(' => self.sequence(b')'),
            q @ (b'\'' | b'"') => self.string(q),
            _ => self.atom(),
        }
    }

    /// A list or tuple; `(x)` is x itself, as in Python.
    fn sequence(&mut self, close: u8) -> Option<Value> {
        self.i += 1;
        let mut items = Vec::new();
        let mut comma = false;
        while !self.eat(close) {
            items.push(self.value()?);
            comma = self.eat(b',');
            if !comma {
                if !self.eat(close) {
                    return None;
                }
                break;
            }
        }
        if close == b')' && items.len() == 1 && !comma {
            return items.pop();
        }
        Some(Value::Array(items))
    }

    fn string(&mut self, quote: u8) -> Option<Value> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                _ if c == quote => break,
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'\\' | b'\'' | b'"' => out.push(e),
                        _ => out.extend_from_slice(&[b'\\', e]),
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).ok().map(Value::String)
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(c))
        {
            self.i += 1;
        }
        let token = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        match token {
            "True" => return Some(Value::Bool(true)),
            "False" => return Some(Value::Bool(false)),
            "None" => return Some(Value::Null),
            _ => {}
        }
        // Digits, a sign, a point and an exponent only: Rust would also read "inf" and "nan".
        let digits = token.replace('_', "");
        let body = digits.trim_start_matches(['+', '-']);
        if body.is_empty()
            || !body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            || !body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        {
            return None;
        }
        let signs = &digits[..digits.len() - body.len()];
        let negative = signs.matches('-').count() % 2 == 1;
        if let Ok(i) = body.parse::<i64>() {
            return Some(Value::from(if negative { -i } else { i }));
        }
        let f = body.parse::<f64>().ok().filter(|f| f.is_finite())?;
        Some(Value::from(if negative { -f } else { f }))
    }
}

/// fvcore's load_yaml_with_base: the file's mapping over its `_BASE_` file(s), each read
/// relative to the file that names it.
fn load_with_base(path: &Path, depth: usize) -> Result<Map<String, Value>> {
    if depth > MAX_BASE_DEPTH {
        return Err(config_err(format!(
            "{}: _BASE_ files nest more than {MAX_BASE_DEPTH} deep (a cycle?)",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let at = |msg: String| config_err(format!("{}: {msg}", path.display()));
    let docs = YamlLoader::load_from_str(&text).map_err(|e| at(e.to_string()))?;
    let mut tree = match docs
        .into_iter()
        .next()
        .map(to_json)
        .transpose()
        .map_err(at)?
    {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(at(format!("a config is a mapping, got {other}"))),
    };
    let Some(base) = tree.remove("_BASE_") else {
        return Ok(tree);
    };
    let bases = match base {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(at(format!("_BASE_ lists file names, got {other}"))),
            })
            .collect::<Result<_>>()?,
        other => return Err(at(format!("_BASE_ is a file name, got {other}"))),
    };
    let mut merged = Map::new();
    for base in bases {
        merge_into(
            load_with_base(&base_path(path, &base), depth + 1)?,
            &mut merged,
        )
        .map_err(at)?;
    }
    merge_into(tree, &mut merged).map_err(at)?;
    Ok(merged)
}

/// A `_BASE_` name: `~` is the home directory; a relative name is taken from the directory of
/// the file that names it.
fn base_path(file: &Path, base: &str) -> PathBuf {
    let home = || {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
    };
    let path = match base.strip_prefix('~') {
        Some(rest) => home().join(rest.trim_start_matches('/')),
        None => PathBuf::from(base),
    };
    if path.is_absolute() {
        path
    } else {
        file.parent().unwrap_or(Path::new("")).join(path)
    }
}

/// fvcore's merge_a_into_b: `a`'s values win; sections merge key by key.
fn merge_into(
    a: Map<String, Value>,
    b: &mut Map<String, Value>,
) -> std::result::Result<(), String> {
    for (k, v) in a {
        match (v, b.get_mut(&k)) {
            (Value::Object(va), Some(Value::Object(vb))) => merge_into(va, vb)?,
            (Value::Object(_), Some(_)) => {
                return Err(format!("cannot inherit key {k:?} from base"))
            }
            (v, _) => {
                b.insert(k, v);
            }
        }
    }
    Ok(())
}

fn to_json(y: Yaml) -> std::result::Result<Value, String> {
    Ok(match y {
        Yaml::Real(s) => {
            let f = Yaml::Real(s.clone()).as_f64();
            f.and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{s} is not a finite number"))?
        }
        Yaml::Integer(i) => Value::from(i),
        Yaml::String(s) => Value::String(s),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Array(items) => Value::Array(
            items
                .into_iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let k = match k {
                    Yaml::String(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(format!("a config key is a name, got {other:?}")),
                };
                m.insert(k, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err("YAML aliases are not supported in configs".to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_read_as_python_reads_them() {
        for (text, want) in [
            ("True", serde_json::json!(true)),
            ("None", Value::Null),
            ("64", serde_json::json!(64)),
            ("-3", serde_json::json!(-3)),
            ("1e-4", serde_json::json!(1e-4)),
            ("1_000", serde_json::json!(1000)),
            (".5", serde_json::json!(0.5)),
            ("[0, 94, 154]", serde_json::json!([0, 94, 154])),
            ("(0.5, 0.75)", serde_json::json!([0.5, 0.75])),
            (
                "[(0.25, 1), (1, 1),]",
                serde_json::json!([[0.25, 1], [1, 1]]),
            ),
            ("(7)", serde_json::json!(7)),
            ("(7,)", serde_json::json!([7])),
            ("'a b'", serde_json::json!("a b")),
            ("[[], []]", serde_json::json!([[], []])),
        ] {
            assert_eq!(literal(text), Some(want), "{text}");
        }
        for text in [
            "kinetics",
            "inf",
            "nan",
            ".",
            "/data/k400",
            "[1, 2",
            "1.2.3",
            "",
        ] {
            assert_eq!(literal(text), None, "{text}");
        }
    }

    #[test]
    fn values_take_the_defaults_type_as_yacs_does() {
        let mut c = PySlowFastCfg::defaults().unwrap();
        c.set("SOLVER.BASE_LR", Value::from(1)).unwrap();
        assert_eq!(c.get("SOLVER.BASE_LR"), Some(&Value::from(1.0)));
        c.set("TRAIN.BATCH_SIZE", Value::String("32".into()))
            .unwrap();
        assert_eq!(c.get("TRAIN.BATCH_SIZE"), Some(&Value::from(32)));
        let e = c.set("TRAIN.BATCH_SIZE", Value::from(1.5)).unwrap_err();
        assert!(
            e.to_string()
                .contains("TRAIN.BATCH_SIZE must be an integer"),
            "{e}"
        );
        let e = c
            .set("MULTIGRID.LONG_CYCLE", Value::String("yes".into()))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("MULTIGRID.LONG_CYCLE must be True or False"),
            "{e}"
        );
        let e = c.set("TRAIN.BATCH", Value::from(1)).unwrap_err();
        assert!(e.to_string().contains("TRAIN.BATCH: not a key"), "{e}");
        let e = c.set("TRAIN", Value::from(1)).unwrap_err();
        assert!(e.to_string().contains("TRAIN is a section"), "{e}");
    }

    #[test]
    fn opts_come_in_pairs() {
        let o = opts_from_args(&["TRAIN.BATCH_SIZE", "64", "NUM_GPUS", "1"]).unwrap();
        assert_eq!(o[1], ("NUM_GPUS".to_string(), "1".to_string()));
        let e = opts_from_args(&["TRAIN.BATCH_SIZE", "64", "NUM_GPUS"]).unwrap_err();
        assert!(e.to_string().contains("NUM_GPUS has no value"), "{e}");
    }
}
