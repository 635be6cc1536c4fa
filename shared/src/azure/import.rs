//! Azure template to kiln template: locating the image template resource, evaluating its ARM
//! expressions, mapping each field by DESIGN.md's "Azure templates" table, and refusing
//! Windows-only parts with every path at once.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::expr::Scope;
use super::{Imported, Warning};
use crate::apps::AppCatalog;
use crate::template::{Customizer, Source, Template};
use crate::validate::{is_os_id, validate, Violation};

/// The name of the Shell customizer that carries a template's `user_script` through Azure
/// (export writes it last; import turns it back into `user_script`).
pub const USER_SCRIPT_STEP: &str = "kiln-user-script";

/// The tag export uses to keep the OS of a source Azure cannot name (a managed or gallery image).
pub const OS_TAG: &str = "kiln-os";

const RESOURCE_TYPE: &str = "Microsoft.VirtualMachineImages/imageTemplates";

/// Maps an Azure Image Builder template (a bare resource or an ARM deployment holding one) to a
/// validated kiln template. `parameters` is an ARM parameters file; `name` names the template
/// (and picks the resource when a deployment holds several); `base_image` replaces the source.
/// `Err` lists every problem at once, each with its path in the Azure JSON (or, for a mapped
/// template that breaks kiln's rules, in the kiln template).
pub fn import(
    azure: &Value,
    parameters: Option<&Value>,
    name: Option<&str>,
    base_image: Option<&str>,
    apps: &AppCatalog,
) -> Result<Imported, Vec<Violation>> {
    let mut m = Mapper::default();
    let Some((resource, prefix)) = m.locate(azure, parameters, name) else {
        return Err(m.errors);
    };
    let template = m.template(resource, &prefix, name, base_image);
    if !m.errors.is_empty() {
        return Err(m.errors);
    }
    let violations = validate(&template, apps);
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(Imported {
        template,
        warnings: m.warnings,
    })
}

#[derive(Default)]
pub(super) struct Mapper {
    pub(super) scope: Scope,
    pub(super) warnings: Vec<Warning>,
    pub(super) errors: Vec<Violation>,
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_template_type(t: &str) -> bool {
    t.eq_ignore_ascii_case(RESOURCE_TYPE)
        || t.eq_ignore_ascii_case("Microsoft.VirtualMachineImages")
}

/// Why a known Azure field has no local meaning.
fn drop_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "location" => "kiln builds on this host; the Azure region is dropped",
        "identity" | "userAssignedIdentities" => "kiln needs no managed identity; dropped",
        "vnetConfig" => "the build VM uses kiln's own network; dropped",
        "stagingResourceGroup" => "kiln has no resource groups; dropped",
        "replicationRegions" | "targetRegions" => "kiln has no regions to replicate to; dropped",
        "storageAccountType" => "kiln has no storage account types; dropped",
        "dependsOn" => "ARM deployment ordering has no kiln meaning; dropped",
        "managedResourceTags" => "kiln creates no Azure resources to tag; dropped",
        "optimize" | "autoRun" => "kiln has no such option; dropped",
        "imageId" => {
            "the image's name is given when the build starts (kiln build start IMAGE_NAME); dropped"
        }
        "uri" => "a VHD goes to a local file, not a storage account; dropped",
        _ => return None,
    })
}

impl Mapper {
    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Violation {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `value` with its expressions evaluated (errors recorded at their paths).
    /// `None` when an expression failed: its error is the one to report, not what follows from it.
    pub(super) fn eval(&mut self, value: &Value, path: &str) -> Option<Value> {
        let mut errs = Vec::new();
        let v = self.scope.resolve(value, path, &mut errs);
        let failed = !errs.is_empty();
        for (p, e) in errs {
            self.error(p, e);
        }
        (!failed).then_some(v)
    }

    /// Warns about every key of `obj` not in `known`: with its reason when kiln knows the field.
    pub(super) fn drop_unknown(&mut self, obj: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let message = drop_reason(key).unwrap_or("kiln does not know this field; dropped");
            self.warn(join(path, key), message);
        }
    }

    /// A string field, evaluated; `<placeholders>` are kept without their brackets, with a warning.
    pub(super) fn string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        let at = join(path, key);
        let v = self.eval(obj.get(key)?, &at)?;
        match v {
            Value::String(s) => Some(self.unplaceholder(s, &at)),
            Value::Null => None,
            other => {
                self.error(at, format!("must be a string, not {other}"));
                None
            }
        }
    }

    pub(super) fn unplaceholder(&mut self, s: String, at: &str) -> String {
        if s.contains('<') && s.contains('>') {
            let plain: String = s.chars().filter(|c| *c != '<' && *c != '>').collect();
            self.warn(
                at,
                format!("{s:?} holds a <placeholder>: kept as {plain:?}; replace it"),
            );
            plain
        } else {
            s
        }
    }

    /// A script's or file's URI: a `<placeholder>` there cannot be guessed, so it is an error.
    pub(super) fn uri(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        let at = join(path, key);
        match self.eval(obj.get(key)?, &at)? {
            Value::String(s) if s.contains('<') && s.contains('>') => {
                self.error(
                    at,
                    format!("{s:?} holds a <placeholder>: replace it with the https URL"),
                );
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.error(at, format!("must be a string, not {other}"));
                None
            }
        }
    }

    pub(super) fn number(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<u32> {
        let at = join(path, key);
        let v = self.eval(obj.get(key)?, &at)?;
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.error(at, format!("must be a whole number, not {v}"));
                None
            }
        }
    }

    pub(super) fn bool(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        let at = join(path, key);
        match self.eval(obj.get(key)?, &at)? {
            Value::Bool(b) => Some(b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.error(at, format!("must be true or false, not {other}"));
                None
            }
        }
    }

    pub(super) fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v.as_object() {
            Some(o) => Some(o),
            None => {
                self.error(path, "must be a JSON object");
                None
            }
        }
    }

    pub(super) fn tags(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> BTreeMap<String, String> {
        let at = join(path, key);
        let mut out = BTreeMap::new();
        let Some(v) = obj.get(key) else { return out };
        let Some(v) = self.eval(v, &at) else {
            return out;
        };
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            out.insert(k, s);
                        }
                        Value::Null => {}
                        other => {
                            out.insert(k, other.to_string());
                        }
                    }
                }
            }
            Value::Null => {}
            _ => self.error(at, "must be an object of tag names and values"),
        }
        out
    }

    /// The image template resource and the path prefix of its fields; sets up the scope.
    pub(super) fn locate<'v>(
        &mut self,
        azure: &'v Value,
        parameters: Option<&Value>,
        name: Option<&str>,
    ) -> Option<(&'v Map<String, Value>, String)> {
        let root = self.object(azure, "")?;
        let Some(resources) = root.get("resources") else {
            if let Some(t) = root.get("type").and_then(Value::as_str) {
                if !is_template_type(t) {
                    self.error(
                        "type",
                        format!("{t:?} is not an image template: kiln imports {RESOURCE_TYPE} resources or ARM deployments holding one"),
                    );
                    return None;
                }
            }
            let props = root.get("properties");
            let looks_like_one = root.contains_key("type")
                || ["source", "customize", "distribute"]
                    .iter()
                    .any(|k| props.and_then(|p| p.get(*k)).is_some());
            if !looks_like_one {
                let message = if props.and_then(|p| p.get("kind")).is_some() {
                    "this is an image template trigger, not an image template: kiln's triggers are the template's [trigger] table (on_base_change)".to_string()
                } else {
                    format!("this is not an Azure image template: kiln imports {RESOURCE_TYPE} resources (with properties.source, customize, distribute) or ARM deployments holding one")
                };
                self.error("", message);
                return None;
            }
            if parameters.is_some() {
                self.warn(
                    "",
                    "a bare resource has no parameters: the parameters file is unused",
                );
            }
            return Some((root, String::new()));
        };
        self.scope_from(root, parameters);
        let Some(list) = resources.as_array() else {
            self.error("resources", "must be an array of resources");
            return None;
        };
        let candidates: Vec<usize> = (0..list.len())
            .filter(|&i| {
                list[i]
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(is_template_type)
            })
            .collect();
        let chosen = match candidates.as_slice() {
            [] => {
                self.error(
                    "resources",
                    format!("holds no {RESOURCE_TYPE} resource: nothing to import"),
                );
                return None;
            }
            [one] => *one,
            many => {
                let names: Vec<(usize, String)> = many
                    .iter()
                    .map(|&i| {
                        let v = list[i].get("name").cloned().unwrap_or_default();
                        let mut errs = Vec::new();
                        let n = self.scope.resolve(&v, "", &mut errs);
                        (i, n.as_str().unwrap_or_default().to_string())
                    })
                    .collect();
                match names.iter().find(|(_, n)| Some(n.as_str()) == name) {
                    Some((i, _)) => *i,
                    None => {
                        let listed: Vec<String> = names
                            .iter()
                            .map(|(i, n)| format!("resources[{i}] {n:?}"))
                            .collect();
                        self.error(
                            "resources",
                            format!(
                                "holds {} image templates ({}): pick one with --name",
                                many.len(),
                                listed.join(", ")
                            ),
                        );
                        return None;
                    }
                }
            }
        };
        for (i, r) in list.iter().enumerate().filter(|(i, _)| *i != chosen) {
            let t = r.get("type").and_then(Value::as_str).unwrap_or("untyped");
            self.warn(
                format!("resources[{i}]"),
                format!("a {t} resource is not the imported image template; dropped"),
            );
        }
        let resource = self.object(&list[chosen], &format!("resources[{chosen}]"))?;
        Some((resource, format!("resources[{chosen}]")))
    }

    /// Parameters (the parameters file's `value`, else `defaultValue`) and variables.
    pub(super) fn scope_from(&mut self, root: &Map<String, Value>, file: Option<&Value>) {
        let given = file
            .and_then(|f| f.get("parameters").or(Some(f)))
            .and_then(Value::as_object);
        if let Some(params) = root.get("parameters").and_then(Value::as_object) {
            for (k, spec) in params {
                let value = given
                    .and_then(|g| g.get(k))
                    .and_then(|g| g.get("value"))
                    .or_else(|| spec.get("defaultValue"));
                if let Some(v) = value {
                    self.scope.parameters.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(g) = given {
            for (k, v) in g {
                if !self.scope.parameters.contains_key(k) {
                    if let Some(v) = v.get("value") {
                        self.scope.parameters.insert(k.clone(), v.clone());
                    }
                    self.warn(
                        format!("parameters.{k}"),
                        "the deployment declares no such parameter; used anyway",
                    );
                }
            }
        }
        if let Some(vars) = root.get("variables").and_then(Value::as_object) {
            self.scope.variables = vars.clone();
        }
    }

    pub(super) fn template(
        &mut self,
        r: &Map<String, Value>,
        prefix: &str,
        name: Option<&str>,
        base_image: Option<&str>,
    ) -> Template {
        self.drop_unknown(
            r,
            prefix,
            &[
                "type",
                "apiVersion",
                "name",
                "tags",
                "properties",
                "comments",
            ],
        );
        // With --name, the resource's own name (often an unset parameter) is not needed.
        let resource_name = match name {
            Some(_) => None,
            None => self.string(r, "name", prefix),
        };
        let mut t = Template {
            name: name
                .map(str::to_string)
                .or(resource_name)
                .unwrap_or_default(),
            tags: self.tags(r, "tags", prefix),
            ..Template::default()
        };
        let name_failed = self.errors.iter().any(|e| e.path == join(prefix, "name"));
        if t.name.is_empty() && !name_failed {
            self.error(
                join(prefix, "name"),
                "the template has no name: give one with --name",
            );
        }
        let path = join(prefix, "properties");
        let Some(p) = r.get("properties").and_then(|p| self.object(p, &path)) else {
            if !r.contains_key("properties") {
                self.error(path, "required: the image template's properties");
            }
            return t;
        };
        self.drop_unknown(
            p,
            &path,
            &[
                "buildTimeoutInMinutes",
                "vmProfile",
                "source",
                "customize",
                "validate",
                "errorHandling",
                "distribute",
            ],
        );
        if let Some(n) = self.number(p, "buildTimeoutInMinutes", &path) {
            t.build_timeout_minutes = n;
        }
        if let Some(vm) = p.get("vmProfile") {
            self.vm_profile(vm, &join(&path, "vmProfile"), &mut t);
        }
        let os_tag = t.tags.remove(OS_TAG);
        match p.get("source") {
            Some(s) => {
                let before = self.errors.len();
                self.source(s, &join(&path, "source"), os_tag, &mut t);
                if base_image.is_some() {
                    // --base-image replaces the source: what kiln could not read of it is moot,
                    // unless it is Windows.
                    for e in self.errors.split_off(before) {
                        if e.message.contains("Windows") {
                            self.errors.push(e);
                        } else {
                            self.warn(
                                e.path,
                                format!("{} (moot: --base-image replaces it)", e.message),
                            );
                        }
                    }
                }
            }
            None if base_image.is_none() => {
                self.error(join(&path, "source"), "required: the image to start from")
            }
            None => {}
        }
        if let Some(b) = base_image {
            if !t.source.image.is_empty() && t.source.image != b {
                self.warn(
                    join(&path, "source"),
                    format!("{} replaced by --base-image {b}", t.source.image),
                );
            }
            t.source = Source {
                image: b.to_string(),
                ..Source::default()
            };
            if is_os_id(b) && t.os != b {
                t.os = b.to_string();
            }
        }
        if let Some(c) = p.get("customize") {
            let at = join(&path, "customize");
            t.customize = self.steps(c, &at, true);
            let last_is_script = matches!(t.customize.last(), Some(Customizer::Shell { name, inline: Some(lines), script: None, .. }) if name == USER_SCRIPT_STEP && lines.len() == 1);
            if last_is_script {
                if let Some(Customizer::Shell {
                    inline: Some(mut lines),
                    ..
                }) = t.customize.pop()
                {
                    t.user_script = lines.pop();
                }
            }
        }
        if let Some(v) = p.get("validate") {
            self.validation(v, &join(&path, "validate"), &mut t);
        }
        if let Some(e) = p.get("errorHandling") {
            self.error_handling(e, &join(&path, "errorHandling"), &mut t);
        }
        match p.get("distribute") {
            Some(d) => self.distribute(d, &join(&path, "distribute"), &mut t),
            None => self.error(join(&path, "distribute"), "required: where the image goes"),
        }
        t
    }
}
