//! The `#[diesel_sqlite_backup::test]` attribute. Use it through `diesel_sqlite_backup::test`,
//! whose documentation describes it; the code it generates calls only
//! `::diesel_sqlite_backup` paths, so a user needs no other dependency.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitBool, LitStr, ReturnType, Token, Type};

/// See `diesel_sqlite_backup::test`.
///
/// With the `async` feature, an `async fn` test may also take
/// `conn: &mut SyncConnectionWrapper<SqliteConnection>` (or `&mut AsyncSqliteConnection`),
/// the same by value, or diesel-async's deadpool `Pool<SyncConnectionWrapper<SqliteConnection>>`:
/// each on a private copy, kept when the test fails (docs/async.md, "Tests").
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut parsed = Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse_one(meta));
    if let Err(e) = parser.parse(args) {
        return e.to_compile_error().into();
    }
    let item = syn::parse_macro_input!(item as ItemFn);
    match expand(parsed, item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
enum Migrations {
    /// `migrations/` beside Cargo.toml.
    #[default]
    Default,
    Path(LitStr),
    None,
}

#[derive(Default)]
struct Args {
    migrations: Migrations,
    fixtures_dir: Option<LitStr>,
    fixtures: Vec<LitStr>,
    flavor: Option<LitStr>,
}

impl Args {
    fn parse_one(&mut self, meta: syn::meta::ParseNestedMeta) -> syn::Result<()> {
        if meta.path.is_ident("migrations") {
            let value = meta.value()?;
            if value.peek(LitBool) {
                let on: LitBool = value.parse()?;
                if on.value {
                    return Err(syn::Error::new(
                        on.span(),
                        "write a folder (`migrations = \"path\"`) or `migrations = false`; \
                         the default is `migrations/` beside Cargo.toml",
                    ));
                }
                self.migrations = Migrations::None;
            } else {
                self.migrations = Migrations::Path(value.parse()?);
            }
            Ok(())
        } else if meta.path.is_ident("fixtures") {
            let content;
            syn::parenthesized!(content in meta.input);
            self.parse_fixtures(&content)
        } else if meta.path.is_ident("flavor") {
            let flavor: LitStr = meta.value()?.parse()?;
            if !["current_thread", "multi_thread"].contains(&flavor.value().as_str()) {
                return Err(syn::Error::new(
                    flavor.span(),
                    "expected \"current_thread\" or \"multi_thread\"",
                ));
            }
            self.flavor = Some(flavor);
            Ok(())
        } else {
            Err(meta.error("expected `migrations`, `fixtures` or `flavor`"))
        }
    }

    /// `"users", "posts"`, with `path = "dir"` and `scripts("users", ...)` in any order.
    fn parse_fixtures(&mut self, content: ParseStream) -> syn::Result<()> {
        while !content.is_empty() {
            if content.peek(LitStr) {
                self.fixtures.push(content.parse()?);
            } else {
                let ident: Ident = content.parse()?;
                if ident == "path" {
                    content.parse::<Token![=]>()?;
                    self.fixtures_dir = Some(content.parse()?);
                } else if ident == "scripts" {
                    let inner;
                    syn::parenthesized!(inner in content);
                    let names = Punctuated::<LitStr, Token![,]>::parse_terminated(&inner)?;
                    self.fixtures.extend(names);
                } else {
                    return Err(syn::Error::new(
                        ident.span(),
                        "expected a fixture name (\"users\"), `path = \"dir\"` or `scripts(..)`",
                    ));
                }
            }
            if !content.is_empty() {
                content.parse::<Token![,]>()?;
            }
        }
        Ok(())
    }
}

/// How the test takes its database.
enum Kind {
    /// `&mut SqliteConnection`
    Borrowed,
    /// `SqliteConnection`
    Owned,
    /// `Pool<SingletonManager>`
    Pool,
    /// `&mut SyncConnectionWrapper<SqliteConnection>` (or `&mut AsyncSqliteConnection`)
    AsyncBorrowed,
    /// `SyncConnectionWrapper<SqliteConnection>`, a deadpool
    /// `Pool<SyncConnectionWrapper<SqliteConnection>>`: opened on a private database.
    AsyncOwned,
}

impl Kind {
    fn is_async(&self) -> bool {
        matches!(self, Kind::AsyncBorrowed | Kind::AsyncOwned)
    }
}

const ARGUMENT_KINDS: &str =
    "`conn: &mut SqliteConnection`, `mut conn: SqliteConnection` or `pool: Pool<SingletonManager>`";

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// A type as written, without the spaces of token printing.
fn shown(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    [
        (" < ", "<"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
    ]
    .iter()
    .fold(text, |t, (from, to)| t.replace(from, to))
}

fn is_named(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == name)
}

/// diesel-async's `SyncConnectionWrapper<..>`, or the crate's alias of it.
fn is_async_connection(ty: &Type) -> bool {
    is_named(ty, "SyncConnectionWrapper") || is_named(ty, "AsyncSqliteConnection")
}

fn kind_of(ty: &Type) -> syn::Result<Kind> {
    let wrong = || {
        syn::Error::new_spanned(
            ty,
            format!(
                "the database argument must be {ARGUMENT_KINDS}, not `{}`",
                shown(ty)
            ),
        )
    };
    if let Type::Reference(r) = ty {
        let kind = if is_named(&r.elem, "SqliteConnection") {
            Kind::Borrowed
        } else if is_async_connection(&r.elem) {
            Kind::AsyncBorrowed
        } else {
            return Err(wrong());
        };
        if r.mutability.is_none() {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "take `&mut {}`: diesel runs queries on a mutable connection",
                    shown(&r.elem)
                ),
            ));
        }
        return Ok(kind);
    }
    if is_named(ty, "SqliteConnection") {
        return Ok(Kind::Owned);
    }
    if is_async_connection(ty) {
        return Ok(Kind::AsyncOwned);
    }
    if let Some(segment) = last_segment(ty).filter(|s| s.ident == "Pool") {
        if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
            let manager = args.args.iter().find_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            if manager.is_some_and(|m| is_named(m, "SingletonManager")) {
                return Ok(Kind::Pool);
            }
            // diesel-async's deadpool pool, whose parameter is the connection.
            if manager.is_some_and(is_async_connection) {
                return Ok(Kind::AsyncOwned);
            }
        }
    }
    Err(wrong())
}

fn check_output(output: &ReturnType) -> syn::Result<()> {
    match output {
        ReturnType::Default => Ok(()),
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if t.elems.is_empty() => Ok(()),
            // `Result`, and aliases such as `QueryResult` or `anyhow::Result`.
            ty if last_segment(ty).is_some_and(|s| s.ident.to_string().ends_with("Result")) => {
                Ok(())
            }
            ty => Err(syn::Error::new_spanned(
                ty,
                "a test returns `()` or `Result<(), E>` with `E: Debug`",
            )),
        },
    }
}

fn manifest_dir() -> syn::Result<PathBuf> {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| syn::Error::new(Span::call_site(), "CARGO_MANIFEST_DIR is not set"))
}

fn path_literal(path: &Path, span: Span) -> syn::Result<LitStr> {
    let text = path
        .to_str()
        .ok_or_else(|| syn::Error::new(span, format!("{} is not valid UTF-8", path.display())))?;
    Ok(LitStr::new(text, span))
}

/// Every file under `dir`, sorted, as (its path inside `dir` joined by `/`, its path).
fn files_under(dir: &Path, span: Span) -> syn::Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let parts: Vec<_> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect();
                out.push((parts.join("/"), path.clone()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)
        .map_err(|e| syn::Error::new(span, format!("reading {}: {e}", dir.display())))?;
    out.sort();
    Ok(out)
}

/// The migrations expression, the key's files, and the folder (for the set's identity).
fn migrations(args: &Args, root: &Path) -> syn::Result<(Tokens, Vec<Tokens>, String)> {
    let (dir, span) = match &args.migrations {
        Migrations::None => return Ok((quote!(::core::option::Option::None), vec![], "-".into())),
        Migrations::Default => {
            let dir = root.join("migrations");
            if !dir.is_dir() {
                return Err(syn::Error::new(
                    Span::call_site(),
                    "no `migrations/` folder beside Cargo.toml: create one, name another with \
                     `migrations = \"path\"`, or write `migrations = false`",
                ));
            }
            (dir, Span::call_site())
        }
        Migrations::Path(lit) => {
            let dir = root.join(lit.value());
            if !dir.is_dir() {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "no migrations folder `{}` beside Cargo.toml (paths are relative to the \
                         crate's Cargo.toml)",
                        lit.value()
                    ),
                ));
            }
            (dir, lit.span())
        }
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    let dir_lit = path_literal(&dir, span)?;
    let files = files_under(&dir, span)?
        .into_iter()
        .map(|(name, path)| {
            let path = path_literal(&path, span)?;
            Ok(quote!((#name, ::core::include_bytes!(#path) as &[u8])))
        })
        .collect::<syn::Result<_>>()?;
    let embedded = quote_spanned! {span=>
        ::core::option::Option::Some({
            // `embed_migrations!` names `diesel_migrations::..`: the crate's re-export.
            use ::diesel_sqlite_backup::__private::diesel_migrations;
            const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
                diesel_migrations::embed_migrations!(#dir_lit);
            fn migrations() -> diesel_migrations::EmbeddedMigrations {
                MIGRATIONS
            }
            migrations as fn() -> _
        })
    };
    Ok((embedded, files, dir_lit.value()))
}

/// The fixtures as `(name, include_str!(file))`, and their files (for the set's identity).
fn fixtures(args: &Args, root: &Path) -> syn::Result<(Vec<Tokens>, Vec<String>)> {
    let dir = match &args.fixtures_dir {
        Some(lit) => {
            let dir = root.join(lit.value());
            if !dir.is_dir() {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("no fixtures folder `{}` beside Cargo.toml", lit.value()),
                ));
            }
            dir
        }
        None => root.join("fixtures"),
    };
    let shown = args
        .fixtures_dir
        .as_ref()
        .map_or_else(|| "fixtures".to_owned(), LitStr::value);
    let mut tokens = Vec::new();
    let mut files = Vec::new();
    for name in &args.fixtures {
        let value = name.value();
        let file_name = if value.ends_with(".sql") {
            value.clone()
        } else {
            format!("{value}.sql")
        };
        let file = dir.join(&file_name);
        if !file.is_file() {
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "fixture `{value}` not found: no file `{shown}/{file_name}` beside Cargo.toml"
                ),
            ));
        }
        let file = file.canonicalize().unwrap_or(file);
        let lit = path_literal(&file, name.span())?;
        files.push(lit.value());
        tokens.push(quote!((#value, ::core::include_str!(#lit))));
    }
    Ok((tokens, files))
}

fn expand(args: Args, item: ItemFn) -> syn::Result<Tokens> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    if let Some(attr) = attrs.iter().find(|a| a.path().is_ident("test")) {
        return Err(syn::Error::new_spanned(
            attr,
            "remove `#[test]`: `#[diesel_sqlite_backup::test]` makes the function a test",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a test function has no generic parameters",
        ));
    }
    let (kind, ty) = match sig.inputs.iter().collect::<Vec<_>>()[..] {
        [FnArg::Typed(arg)] => (kind_of(&arg.ty)?, &*arg.ty),
        _ => {
            let message = format!("the test takes one argument, its database: {ARGUMENT_KINDS}");
            // No argument: the name; too many: the second.
            return Err(match sig.inputs.iter().nth(1) {
                Some(second) => syn::Error::new_spanned(second, message),
                None => syn::Error::new(sig.ident.span(), message),
            });
        }
    };
    check_output(&sig.output)?;
    let is_async = sig.asyncness.is_some();
    if is_async && !cfg!(feature = "async") {
        return Err(syn::Error::new(
            sig.asyncness.span(),
            "`async fn` tests need the `async` feature of diesel-sqlite-backup",
        ));
    }
    if kind.is_async() && !is_async {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "an async connection or pool is for `async fn` tests: make the test `async fn`, \
                 or take `{}`",
                match kind {
                    Kind::AsyncBorrowed => "&mut SqliteConnection",
                    _ if is_named(ty, "Pool") => "Pool<SingletonManager>",
                    _ => "SqliteConnection",
                }
            ),
        ));
    }
    if let (Some(flavor), false) = (&args.flavor, is_async) {
        return Err(syn::Error::new(
            flavor.span(),
            "`flavor` is for `async fn` tests",
        ));
    }

    let root = manifest_dir()?;
    let (migrations, migration_files, migrations_id) = migrations(&args, &root)?;
    let (fixtures, fixture_files) = fixtures(&args, &root)?;
    // One template per process for each distinct (migrations, fixtures) set.
    let id = format!("{migrations_id}|{}", fixture_files.join("|"));

    let name = &sig.ident;
    let output = &sig.output;
    let mut inner = sig.clone();
    inner.ident = format_ident!("__dsb_test", span = name.span());
    let private = quote!(::diesel_sqlite_backup::__private);
    let test_name = quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#name)
    ));
    // The guard, which keeps the database of a failed test, and the test's argument.
    let (guard, argument) = match kind {
        Kind::Borrowed => (
            quote!(let mut __dsb_db = #private::connection(&__dsb_template, #test_name);),
            quote!(&mut *__dsb_db),
        ),
        // The argument's type, as written, picks what `owned` opens.
        Kind::Owned | Kind::AsyncOwned => (
            quote_spanned! {ty.span()=>
                let (__dsb_db, __dsb_conn): (_, #ty) =
                    #private::owned(&__dsb_template, #test_name);
            },
            quote!(__dsb_conn),
        ),
        Kind::AsyncBorrowed => {
            let Type::Reference(r) = ty else {
                unreachable!("kind_of gives AsyncBorrowed for references only")
            };
            let elem = &r.elem;
            (
                quote_spanned! {elem.span()=>
                    let (__dsb_db, mut __dsb_conn): (_, #elem) =
                        #private::owned(&__dsb_template, #test_name);
                },
                quote!(&mut __dsb_conn),
            )
        }
        Kind::Pool => (
            quote!(let __dsb_db = #private::pool(&__dsb_template, #test_name);),
            quote!(::core::clone::Clone::clone(&*__dsb_db)),
        ),
    };
    // An async test's runtime is made and entered before its argument, so that async
    // connections bind to it (made outside, diesel-async's wrapper makes a runtime of its
    // own, which panics when the test drops it).
    let (runtime, call) = if is_async {
        let builder = match args.flavor.as_ref().map(LitStr::value).as_deref() {
            Some("multi_thread") => quote!(new_multi_thread),
            _ => quote!(new_current_thread),
        };
        (
            quote! {
                let __dsb_runtime = #private::tokio::runtime::Builder::#builder()
                    .enable_all()
                    .build()
                    .expect("building the tokio runtime of the test");
                let __dsb_entered = __dsb_runtime.enter();
            },
            quote!(__dsb_runtime.block_on(__dsb_test(#argument))),
        )
    } else {
        (quote!(), quote!(__dsb_test(#argument)))
    };
    Ok(quote! {
        // Outside `cfg(test)` (a doctest, an example's `main`) an ordinary function to call.
        #[cfg_attr(test, ::core::prelude::v1::test)]
        #[cfg_attr(not(test), allow(dead_code))]
        #(#attrs)*
        #vis fn #name() #output {
            #inner #block
            let __dsb_template = {
                static SET: #private::Set = #private::Set {
                    id: #id,
                    migrations: #migrations,
                    migration_files: &[#(#migration_files),*],
                    fixtures: &[#(#fixtures),*],
                };
                #private::template(&SET)
            };
            #runtime
            #guard
            let __dsb_result = #call;
            #private::finish(__dsb_db, __dsb_result)
        }
    })
}
