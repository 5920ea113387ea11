//! Every public route that copies a database file INTO an in-memory database.

use std::path::Path;
use std::time::Duration;

use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{Backup, BackupError, BackupExt, BackupOptions, StepResult, Template};

use super::check::{fresh_pool, used_dump, used_pool, Dest, Old};

/// One way of getting a file's content into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `pool.get()?.restore_from_with(path, opts)`, into a fresh or a used pool, with or
    /// without `verify_integrity(true)`.
    Restore { used: bool, verify: bool },
    /// `SqliteConnection::establish(path)?.backup_to(&mut pool.get()?, opts)`.
    BackupTo { used: bool },
    /// `Backup::new(&mut SqliteConnection::establish(path)?, &mut pool.get()?)`, stepped to
    /// `Done`, `finish()`.
    Stepped { used: bool },
    /// `Template::from_file(path)?.connection()`.
    FromFileConnection,
    /// `Template::from_file(path)?.pool()`.
    FromFilePool,
    /// `Template::from_connection(&mut SqliteConnection::establish(path)?)?.connection()`.
    FromConnConnection,
    /// `Template::from_connection(&mut SqliteConnection::establish(path)?)?.pool()`.
    FromConnPool,
    /// `Template::from_connection(&mut SqliteConnection::establish(path)?)?`
    /// `.copy_into(&mut used.get()?)`.
    FromConnCopyInto,
}

impl Route {
    /// Every route; the `verify_integrity(true)` restores only when `with_verify`.
    pub fn all(with_verify: bool) -> Vec<Route> {
        let mut routes = vec![
            Route::Restore {
                used: false,
                verify: false,
            },
            Route::Restore {
                used: true,
                verify: false,
            },
        ];
        if with_verify {
            routes.push(Route::Restore {
                used: false,
                verify: true,
            });
            routes.push(Route::Restore {
                used: true,
                verify: true,
            });
        }
        routes.extend([
            Route::BackupTo { used: false },
            Route::BackupTo { used: true },
            Route::Stepped { used: false },
            Route::Stepped { used: true },
            Route::FromFileConnection,
            Route::FromFilePool,
            Route::FromConnConnection,
            Route::FromConnPool,
            Route::FromConnCopyInto,
        ]);
        routes
    }

    pub fn name(&self) -> String {
        let into = |used: bool| if used { "used pool" } else { "fresh pool" };
        match *self {
            Route::Restore { used, verify } => format!(
                "restore_from{} -> {}",
                if verify { "(verify_integrity)" } else { "" },
                into(used)
            ),
            Route::BackupTo { used } => format!("backup_to -> {}", into(used)),
            Route::Stepped { used } => format!("Backup handle -> {}", into(used)),
            Route::FromFileConnection => "Template::from_file -> connection()".into(),
            Route::FromFilePool => "Template::from_file -> pool()".into(),
            Route::FromConnConnection => "Template::from_connection -> connection()".into(),
            Route::FromConnPool => "Template::from_connection -> pool()".into(),
            Route::FromConnCopyInto => "Template::from_connection -> copy_into(used pool)".into(),
        }
    }

    /// The route named `name` (for child processes).
    pub fn parse(name: &str) -> Route {
        Route::all(true)
            .into_iter()
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("no route named {name:?}"))
    }

    /// The crate's Open routes (`restore_from` and templates): they exist to load files, so
    /// a file plain SQLite reads must load. `backup_to` and the stepped handle are
    /// connection-to-connection copies that may refuse with a clear reason.
    pub fn must_open(&self) -> bool {
        !matches!(self, Route::BackupTo { .. } | Route::Stepped { .. })
    }
}

/// Bounds for one run of a route.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `BackupOptions::timeout` where the route takes options.
    pub timeout: Duration,
    /// How many `StepResult::Busy` the stepped route sits out (5 ms apart) before giving up.
    pub busy_steps: u32,
    /// How many steps in all the stepped route takes before giving up (restarts).
    pub max_steps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            busy_steps: 6_000,
            max_steps: 20_000,
        }
    }
}

/// Why a route failed, as its caller sees it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// A busy or locked database: `BackupError::is_busy`, SQLite code 5 or 6, or the stepped
    /// route giving up on `StepResult::Busy`.
    pub busy: bool,
    /// `BackupError::InvalidDatabase`: the call says the file is not a usable database.
    pub invalid: bool,
}

impl From<BackupError> for Failure {
    fn from(e: BackupError) -> Self {
        Failure {
            busy: e.is_busy() || matches!(e.code(), Some(5 | 6)),
            invalid: matches!(e, BackupError::InvalidDatabase { .. }),
            message: e.to_string(),
        }
    }
}

fn failure(message: impl Into<String>, busy: bool) -> Failure {
    Failure {
        message: message.into(),
        busy,
        invalid: false,
    }
}

/// What a route did: its result, where the copy went (if it went anywhere) and what that
/// destination held before.
pub struct Outcome {
    pub result: Result<(), Failure>,
    pub dest: Option<Dest>,
    pub old: Old,
}

fn open(path: &Path) -> Result<SqliteConnection, Failure> {
    SqliteConnection::establish(path.to_str().unwrap())
        .map_err(|e| failure(format!("establish failed: {e}"), false))
}

fn dest_pool(used: bool) -> (Dest, Old) {
    if used {
        (Dest::Pool(used_pool()), Old::Dump(used_dump()))
    } else {
        (Dest::Pool(fresh_pool()), Old::Empty)
    }
}

fn checkout(dest: &Dest) -> r2d2::PooledConnection<diesel_sqlite_backup::SingletonManager> {
    match dest {
        Dest::Pool(pool) => pool.get().expect("checkout before the route"),
        Dest::Conn(_) => unreachable!("routes copy into pools"),
    }
}

fn stepped(
    src: &mut SqliteConnection,
    dst: &mut SqliteConnection,
    limits: Limits,
) -> Result<(), Failure> {
    let mut backup = Backup::new(src, dst)?;
    let (mut busy, mut steps) = (0, 0);
    loop {
        steps += 1;
        match backup.step(16)? {
            StepResult::Done => break,
            StepResult::More if steps < limits.max_steps => {}
            StepResult::More => {
                drop(backup);
                return Err(failure(
                    format!("still not done after {steps} steps"),
                    false,
                ));
            }
            StepResult::Busy if busy < limits.busy_steps => {
                busy += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            StepResult::Busy => {
                drop(backup);
                return Err(failure(format!("gave up after {busy} busy steps"), true));
            }
        }
    }
    backup.finish()?;
    Ok(())
}

/// Runs `route` on the file at `path`.
pub fn run(route: Route, path: &Path, limits: Limits) -> Outcome {
    let options = || BackupOptions::default().timeout(limits.timeout);
    let none = |result| Outcome {
        result,
        dest: None,
        old: Old::Empty,
    };
    match route {
        Route::Restore { used, verify } => {
            let (dest, old) = dest_pool(used);
            let result = checkout(&dest)
                .restore_from_with(path, options().verify_integrity(verify))
                .map_err(Failure::from);
            Outcome {
                result,
                dest: Some(dest),
                old,
            }
        }
        Route::BackupTo { used } | Route::Stepped { used } => {
            let (dest, old) = dest_pool(used);
            let result = open(path).and_then(|mut src| {
                let mut conn = checkout(&dest);
                if matches!(route, Route::Stepped { .. }) {
                    stepped(&mut src, &mut conn, limits)
                } else {
                    src.backup_to(&mut conn, options()).map_err(Failure::from)
                }
            });
            Outcome {
                result,
                dest: Some(dest),
                old,
            }
        }
        Route::FromFileConnection | Route::FromFilePool => {
            let made = Template::from_file(path).and_then(|t| match route {
                Route::FromFilePool => t.pool().map(Dest::Pool),
                _ => t.connection().map(Dest::Conn),
            });
            match made {
                Ok(dest) => Outcome {
                    result: Ok(()),
                    dest: Some(dest),
                    old: Old::Empty,
                },
                Err(e) => none(Err(e.into())),
            }
        }
        Route::FromConnConnection | Route::FromConnPool | Route::FromConnCopyInto => {
            let template = open(path)
                .and_then(|mut src| Template::from_connection(&mut src).map_err(Failure::from));
            let template = match template {
                Ok(t) => t,
                Err(e) if route == Route::FromConnCopyInto => {
                    let (dest, old) = dest_pool(true);
                    return Outcome {
                        result: Err(e),
                        dest: Some(dest),
                        old,
                    };
                }
                Err(e) => return none(Err(e)),
            };
            let made = match route {
                Route::FromConnConnection => template.connection().map(Dest::Conn),
                Route::FromConnPool => template.pool().map(Dest::Pool),
                _ => {
                    let (dest, old) = dest_pool(true);
                    let result = template
                        .copy_into(&mut checkout(&dest))
                        .map_err(Failure::from);
                    return Outcome {
                        result,
                        dest: Some(dest),
                        old,
                    };
                }
            };
            match made {
                Ok(dest) => Outcome {
                    result: Ok(()),
                    dest: Some(dest),
                    old: Old::Empty,
                },
                Err(e) => none(Err(e.into())),
            }
        }
    }
}
