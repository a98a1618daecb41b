//! The `granite` command line: `serve` (the default), `user add|password|remove`, `backup`, `driver`
//! and `demo`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::{DatabaseArgs, Settings};
use crate::db::Pool;
use crate::driver;
use crate::organizations::{self, OrganizationSlug};
use crate::users::password::Password;
use crate::users::{self, Email, Role};

/// Granite API Management: API keys, enrollment tokens, driver machines and queue status for an
/// automation platform. With no subcommand, `granite` serves (like `granite serve`).
#[derive(Parser)]
#[command(name = "granite", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard, the public API and the driver API.
    Serve(Settings),
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// The reference driver: enroll this machine, then run jobs on it.
    #[command(subcommand)]
    Driver(DriverCommand),
    /// Try Granite: a server on a fresh database with simulated drivers and a trickle of jobs.
    Demo(DemoArgs),
    /// Copy the SQLite database, consistently, while the server runs (PostgreSQL: use pg_dump).
    Backup(BackupArgs),
}

#[derive(clap::Args)]
struct BackupArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The new file to write, relative to the current directory; it must not exist yet. It is made
    /// readable by you only.
    path: std::path::PathBuf,
}

#[derive(Subcommand)]
enum DriverCommand {
    /// Enroll this machine with a one-time token and save its credential (readable by you only).
    Enroll(DriverEnroll),
    /// Heartbeat, take jobs and run them: a job for automation X runs the executable X from --automations.
    Run(DriverRun),
}

#[derive(clap::Args)]
struct DriverEnroll {
    /// The Granite server, e.g. https://granite.example.com
    #[arg(long)]
    server: String,
    /// The enrollment token. Prefer GRANITE_ENROLLMENT_TOKEN or standard input: a flag shows in the
    /// process list. When neither is given, the token is read from standard input (without echo).
    #[arg(long, env = "GRANITE_ENROLLMENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to save the credential [default: ~/.config/granite/driver.json]
    #[arg(long)]
    credentials: Option<std::path::PathBuf>,
    /// The machine's name in the dashboard [default: the host name]
    #[arg(long)]
    name: Option<String>,
    /// A capability jobs can require (repeat for several); the OS is added by itself.
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Replace an existing enrollment in the credentials file.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct DriverRun {
    /// The saved enrollment [default: ~/.config/granite/driver.json]
    #[arg(long)]
    credentials: Option<std::path::PathBuf>,
    /// Folder of automations: a job for automation X runs the executable X from here, with the job's
    /// parameters as JSON on standard input; what it prints (JSON) is the result.
    #[arg(long)]
    automations: std::path::PathBuf,
    /// A capability jobs can require (repeat for several), announced at every start together with the
    /// OS; it replaces the set the machine enrolled with. Without any, the enrolled set stays.
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Seconds an automation may run before it is stopped and the job fails.
    #[arg(long, default_value_t = 300)]
    time_limit: u64,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Keep the demo's database when it stops (it is deleted otherwise).
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user to an organization. The password is read from standard input (prompted without
    /// echo on a terminal).
    Add(UserAdd),
    /// Set a user's password (read from standard input like `user add`). Every session of the user
    /// ends: whoever knew the old password is signed out.
    Password(UserByEmail),
    /// Remove a user. Their sessions end at once; what they created stays. An organization's last
    /// admin cannot be removed.
    Remove(UserByEmail),
}

#[derive(clap::Args)]
struct UserByEmail {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The user's email.
    #[arg(long)]
    email: String,
}

#[derive(clap::Args)]
struct UserAdd {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The user's email, used to sign in.
    #[arg(long)]
    email: String,
    /// admin (may change everything), member (creates keys and tokens, revokes their own, cancels and
    /// retries runs) or viewer (sees everything, changes nothing).
    #[arg(long, default_value = "admin", value_parser = Role::parse)]
    role: Role,
    /// Slug of an existing organization (shown on the dashboard under API Keys: /api/SLUG/). May be
    /// left out when there is only one.
    #[arg(long = "org", conflicts_with = "new_org")]
    org: Option<String>,
    /// Create a new organization with this name and add the user to it.
    #[arg(long = "new-org")]
    new_org: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(match cli.command {
        Some(Command::Demo(_)) => crate::telemetry::DEMO_FILTER,
        _ => crate::telemetry::DEFAULT_FILTER,
    });
    let outcome = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(settings)) => serve(settings),
        Some(Command::User(UserCommand::Add(args))) => add_user(args),
        Some(Command::User(UserCommand::Password(args))) => set_password(args),
        Some(Command::User(UserCommand::Remove(args))) => remove_user(args),
        Some(Command::Driver(DriverCommand::Enroll(args))) => enroll_driver(args),
        Some(Command::Driver(DriverCommand::Run(args))) => return run_driver(args),
        Some(Command::Demo(args)) => crate::demo::run(args.bind, args.keep),
        Some(Command::Backup(args)) => backup(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("granite: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn add_user(args: UserAdd) -> anyhow::Result<()> {
    let email = Email::parse(&args.email).map_err(|e| anyhow::anyhow!(e))?;
    let password = Password::parse(&read_password()?).map_err(|e| anyhow::anyhow!(e))?;
    let password_hash = password.hash();
    let pool = Pool::open(&args.database.database_url, 1)?;
    let mut conn = pool.get()?;
    let organization = match &args.new_org {
        Some(name) => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 100,
                "--new-org needs a name of 1–100 characters"
            );
            let slug = OrganizationSlug::from_name(name);
            anyhow::ensure!(
                organizations::find_by_slug(&mut conn, slug.as_str())?.is_none(),
                "an organization with the slug \"{}\" exists already; add the user with --org {}",
                slug.as_str(),
                slug.as_str()
            );
            organizations::create(&mut conn, &slug, name)?
        }
        None => match &args.org {
            Some(slug) => organizations::find_by_slug(&mut conn, slug)?
                .ok_or_else(|| anyhow::anyhow!("no organization with the slug \"{slug}\""))?,
            None => {
                let mut all = organizations::all(&mut conn)?;
                match all.len() {
                    1 => all.remove(0),
                    0 => anyhow::bail!(
                        "there is no organization yet: add the user with --new-org NAME"
                    ),
                    _ => anyhow::bail!(
                        "there are several organizations: name one with --org ({})",
                        all.iter()
                            .map(|o| o.slug.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        },
    };
    anyhow::ensure!(
        users::find_by_email(&mut conn, &email)?.is_none(),
        "a user with this email exists already"
    );
    let user = users::create(
        &mut conn,
        organization.id,
        &email,
        &password_hash,
        args.role,
    )?;
    println!(
        "Added {} as {} of {} ({}).",
        user.email,
        args.role.as_str(),
        organization.name,
        organization.slug
    );
    Ok(())
}

/// The user `args` names, with a connection to their database.
fn find_user(args: &UserByEmail) -> anyhow::Result<(users::User, crate::db::Checkout)> {
    let email = Email::parse(&args.email).map_err(|e| anyhow::anyhow!(e))?;
    let pool = Pool::open(&args.database.database_url, 1)?;
    let mut conn = pool.get()?;
    let user = users::find_by_email(&mut conn, &email)?
        .ok_or_else(|| anyhow::anyhow!("no user with the email {}", email.as_str()))?;
    Ok((user, conn))
}

fn set_password(args: UserByEmail) -> anyhow::Result<()> {
    let (user, mut conn) = find_user(&args)?;
    let password = Password::parse(&read_password()?).map_err(|e| anyhow::anyhow!(e))?;
    users::set_password(&mut conn, user.id, &password.hash())?;
    println!(
        "Changed the password of {}; their sessions were signed out.",
        user.email
    );
    Ok(())
}

fn remove_user(args: UserByEmail) -> anyhow::Result<()> {
    let (user, mut conn) = find_user(&args)?;
    users::remove(&mut conn, &user, None)?;
    println!("Removed {}; their sessions were signed out.", user.email);
    Ok(())
}

fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let done = crate::db::backup::backup(&args.database.database_url, &args.path)?;
    println!(
        "Backed up {} to {} ({} bytes, readable by you only).\nServe it with GRANITE_DATABASE_URL=sqlite://{}",
        args.database.database_url.redacted(),
        done.path.display(),
        done.bytes,
        done.path.display()
    );
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn enroll_driver(args: DriverEnroll) -> anyhow::Result<()> {
    let path = args
        .credentials
        .unwrap_or_else(driver::credentials::default_path);
    anyhow::ensure!(
        args.force || !path.exists(),
        "{} already holds an enrollment; pass --force to replace it, or --credentials to keep both",
        path.display()
    );
    let token = match args.token {
        Some(token) => token,
        None if std::io::stdin().is_terminal() => rpassword::prompt_password("Enrollment token: ")?,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line
        }
    };
    let name = args.name.unwrap_or_else(driver::host_name);
    let capabilities = driver::capabilities(&args.capabilities);
    let client = driver::client::DriverClient::new(&args.server, None);
    let enrolled = client.enroll(token.trim(), &name, &driver::os_version(), &capabilities)?;
    let saved = driver::credentials::SavedEnrollment {
        server: args.server.trim_end_matches('/').to_owned(),
        machine_id: enrolled.machine_id,
        organization: enrolled.organization.slug.clone(),
        name: name.clone(),
        credential: enrolled.credential,
    };
    driver::credentials::save(&path, &saved, args.force)?;
    println!(
        "Enrolled {name} as machine {} of {} (capabilities: {}).\nCredential saved to {} (readable by you only).\nStart it with: granite driver run --automations DIR",
        enrolled.machine_id,
        enrolled.organization.slug,
        capabilities.join(", "),
        path.display()
    );
    Ok(())
}

fn run_driver(args: DriverRun) -> ExitCode {
    let outcome = (|| -> anyhow::Result<driver::Stopped> {
        let path = args
            .credentials
            .unwrap_or_else(driver::credentials::default_path);
        let folder = driver::automation::AutomationFolder::open(&args.automations)
            .map_err(|e| anyhow::anyhow!(e))?;
        let saved = driver::credentials::load(&path)?;
        let state = std::sync::Arc::new(driver::DriverState::default());
        *state.announcement.lock().unwrap_or_else(|e| e.into_inner()) = Some(
            driver::client::Announcement::of_this_process(&args.capabilities),
        );
        let on_signal = state.clone();
        ctrlc::set_handler(move || on_signal.on_interrupt())?;
        eprintln!(
            "granite driver: {} (machine {} of {}) takes jobs from {}, running automations from {}: {}",
            saved.name,
            saved.machine_id,
            saved.organization,
            saved.server,
            folder.path().display(),
            folder.found().join(", ")
        );
        let executor = driver::automation::ProcessExecutor {
            folder,
            time_limit: std::time::Duration::from_secs(args.time_limit.max(1)),
        };
        let client = std::sync::Arc::new(driver::client::DriverClient::new(
            &saved.server,
            Some(saved.credential),
        ));
        Ok(driver::run(client, std::sync::Arc::new(executor), state))
    })();
    match outcome {
        Ok(driver::Stopped::Interrupted) => ExitCode::SUCCESS,
        Ok(driver::Stopped::Removed) => {
            eprintln!("granite driver: {}", driver::REMOVED_MESSAGE);
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("granite: {error:#}");
            ExitCode::FAILURE
        }
    }
}
