//! The method table in code (`kiln_shared::methods`) and the README's method table name the
//! same methods.

use std::collections::BTreeSet;

use kiln_shared::methods::Name;

/// The methods in the first column of README.md's table under "## The protocol".
fn readme_methods() -> BTreeSet<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## The protocol\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_default();
    let table = section
        .split("| method | params | result |")
        .nth(1)
        .unwrap_or_default();
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string))
        .collect()
}

#[test]
fn readme_lists_every_method_and_no_other() {
    let readme = readme_methods();
    assert!(!readme.is_empty(), "no method table found in README.md");
    let code: BTreeSet<String> = Name::ALL.iter().map(|m| m.as_str().to_string()).collect();
    let missing: Vec<_> = code.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README.md's method table lacks {missing:?}; it lists {extra:?}, which the code does not have"
    );
}

#[test]
fn names_parse_back() {
    for &m in Name::ALL {
        assert_eq!(Name::parse(m.as_str()), Some(m));
    }
    assert_eq!(Name::parse("image.nope"), None);
}
