//! The modules of `src/` are layers: a module imports only modules of lower layers, so no
//! two depend on each other (directly or around a cycle), and each can be read, tested and
//! changed without the ones above it. This reads every file of the library and checks each
//! path through `crate::` against the order below. Test code (`#[cfg(test)]`) is left out:
//! a test may build its fixtures with whatever it needs.

use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The layers, lowest first. A module imports only modules of lower layers: neither the
/// others of its own layer nor any above.
const LAYERS: &[&[&str]] = &[
    // what everything may use: errors, ids
    &["error", "ids", "secrets"],
    // the configuration's types
    &["config"],
    // limits and the upstream HTTP client, which know nothing of what they serve
    &["limits", "upstream"],
    // usage records, costs and metrics; OpenTelemetry traces, told plain names and counts
    &["metering", "telemetry"],
    // the database and the usage writer
    &["store"],
    // the registry snapshot, built from the store's rows, and gateway keys
    &["auth", "registry"],
    // the adapters: pure translations for a deployment
    &["providers"],
    // the in-process mock provider and `tollgate mock-upstream`, in the providers' formats
    &["mock"],
    // the response cache: keys, entries and their replay, in the providers' formats
    &["cache"],
    // the data plane
    &["proxy"],
    // the admin API's handlers, on the data plane's state; the background task queue and its
    // workers, whose model calls go along the data plane
    &["admin", "tasks"],
    // the dashboard API's handlers (`/api/v1/*`), on the data plane
    &["api"],
    // the application shell: start-up, listeners, router and role checks, reloads
    &["server"],
];

/// One `crate::` path: where it is, and the top-level module it names.
#[derive(Debug)]
struct Import {
    file: String,
    line: usize,
    module: String,
}

#[test]
fn lower_layers_never_import_upper_ones() {
    let mut problems = Vec::new();
    for (file, imports) in library_imports() {
        let from = top_module(&file);
        let Some(from_layer) = layer_of(&from) else {
            problems.push(format!("{file}: module `{from}` has no layer in LAYERS"));
            continue;
        };
        for i in imports.iter().filter(|i| i.module != from) {
            let allowed = layer_of(&i.module).is_some_and(|to| to < from_layer);
            if allowed {
                continue;
            }
            problems.push(format!(
                "{}:{}: `{from}` imports `{}`, which is not in a lower layer",
                i.file, i.line, i.module
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The checker itself: it sees every way code names a module, and skips test code.
#[test]
fn imports_are_found_in_every_form_and_test_code_is_skipped() {
    let source = r#"
use crate::a::X;
use crate::{b::Y, c};
use std::io;
fn f() -> crate::d::T {
    let _ = format!("{}", crate::e::g());
}
#[cfg(test)]
mod tests {
    use crate::z::W;
}
#[cfg(test)]
mod fixtures;
"#;
    let (imports, test_modules) = read_imports("src/x.rs", source);
    let found: Vec<(usize, &str)> = imports
        .iter()
        .map(|i| (i.line, i.module.as_str()))
        .collect();
    assert_eq!(found, [(2, "a"), (3, "b"), (3, "c"), (5, "d"), (6, "e")]);
    assert_eq!(test_modules, ["fixtures"]);
}

/// Every module file of the library with the `crate::` paths of its code outside tests
/// (`src/lib.rs` only declares the modules; `src/main.rs` and its `src/cli/` are the binary,
/// a crate of its own on top of the library).
fn library_imports() -> Vec<(String, Vec<Import>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut read = Vec::new();
    let mut test_only: Vec<PathBuf> = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if name == "src/lib.rs" || name == "src/main.rs" || name.starts_with("src/cli/") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let (imports, test_modules) = read_imports(&name, &source);
        for m in test_modules {
            test_only.push(children_dir(&path).join(m));
        }
        read.push((path, name, imports));
    }
    read.into_iter()
        .filter(|(path, _, _)| {
            !test_only
                .iter()
                .any(|t| path.with_extension("").starts_with(t))
        })
        .map(|(_, name, imports)| (name, imports))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Where the files of a module's `mod x;` children are.
fn children_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap();
    match file.file_stem().unwrap().to_str().unwrap() {
        "mod" | "lib" | "main" => dir.to_owned(),
        stem => dir.join(stem),
    }
}

/// `src/proxy/handler.rs` is in `proxy`, `src/config.rs` is `config`.
fn top_module(file: &str) -> String {
    let first = file.trim_start_matches("src/").split('/').next().unwrap();
    first.trim_end_matches(".rs").to_owned()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The `crate::` paths of a file's code outside tests, and the modules it declares as
/// test-only (`#[cfg(test)] mod x;`).
fn read_imports(file: &str, source: &str) -> (Vec<Import>, Vec<String>) {
    let syntax = syn::parse_file(source).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut reader = Reader {
        file,
        imports: Vec::new(),
        test_modules: Vec::new(),
    };
    reader.visit_file(&syntax);
    (reader.imports, reader.test_modules)
}

struct Reader<'f> {
    file: &'f str,
    imports: Vec<Import>,
    test_modules: Vec<String>,
}

impl Reader<'_> {
    fn add(&mut self, module: &proc_macro2::Ident) {
        self.imports.push(Import {
            file: self.file.to_owned(),
            line: module.span().start().line,
            module: module.to_string(),
        });
    }

    /// `use` trees: `crate::x::...`, `crate::{x, y::z}`.
    fn use_tree(&mut self, tree: &syn::UseTree, after_crate: bool) {
        match tree {
            syn::UseTree::Path(p) if after_crate => self.add(&p.ident),
            syn::UseTree::Path(p) if p.ident == "crate" => self.use_tree(&p.tree, true),
            syn::UseTree::Name(n) if after_crate => self.add(&n.ident),
            syn::UseTree::Rename(r) if after_crate => self.add(&r.ident),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(t, after_crate)),
            _ => {}
        }
    }

    /// Macro arguments are tokens, not syntax: `crate :: x` in them.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            match (token, &tokens[i + 1..]) {
                (TokenTree::Group(g), _) => self.tokens(g.stream()),
                (
                    TokenTree::Ident(krate),
                    [TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(module), ..],
                ) if krate == "crate" && a.as_char() == ':' && b.as_char() == ':' => {
                    self.add(module)
                }
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if is_test_only(item_attrs(item)) {
            if let syn::Item::Mod(m) = item {
                if m.content.is_none() {
                    self.test_modules.push(m.ident.to_string());
                }
            }
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" {
                self.add(&second.ident);
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item;
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `#[cfg(test)]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && matches!(&a.meta, syn::Meta::List(l) if l.tokens.to_string() == "test")
    })
}
