//! `${NAME}` in a configured value: the environment variable NAME, read when the value is
//! used: a price source's URL, headers and body when a consumer starts, Kafka options and Redis
//! URLs when a client is built. `$` not followed by `{` is literal.

/// The variables a template names, or what is wrong with its syntax.
pub fn variables(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {template:?}"));
        };
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("${{{name}}} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
        }
        names.push(name);
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// Replaces every `${NAME}` with `lookup(NAME)`; the error names the first variable unset.
pub fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Unset> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        // Checked by `variables` at load; an unterminated one is kept as it is.
        let Some(end) = after.find('}') else { break };
        out.push_str(&rest[..start]);
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| Unset(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An environment variable a template needs is not set.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct Unset(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_expands_variables() {
        let t = "Bearer ${TOKEN} for ${REGION}$5";
        assert_eq!(variables(t).unwrap(), ["TOKEN", "REGION"]);
        let lookup = |n: &str| (n != "MISSING").then(|| n.to_lowercase());
        assert_eq!(expand(t, lookup).unwrap(), "Bearer token for region$5");
        assert_eq!(expand("a ${MISSING} b", lookup).unwrap_err().0, "MISSING");
        assert_eq!(expand("no variables", lookup).unwrap(), "no variables");
        assert_eq!(expand("a ${TOKEN} b ${OPEN", lookup).unwrap(), "a token b ${OPEN");
    }

    #[test]
    fn rejects_bad_syntax() {
        assert!(variables("x ${UNCLOSED").is_err());
        assert!(variables("${1ABC}").is_err());
        assert!(variables("${}").is_err());
        assert!(variables("${A-B}").is_err());
    }
}
