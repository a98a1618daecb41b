//! The `granite` command line: `serve` (the default) and `user add`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::{DatabaseArgs, Settings};
use crate::db::Pool;
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
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user to an organization. The password is read from standard input (prompted without
    /// echo on a terminal).
    Add(UserAdd),
}

#[derive(clap::Args)]
struct UserAdd {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The user's email, used to sign in.
    #[arg(long)]
    email: String,
    /// admin (may change everything) or viewer (sees everything, changes nothing).
    #[arg(long, default_value = "admin", value_parser = Role::parse)]
    role: Role,
    /// Slug of an existing organization.
    #[arg(long = "org", default_value = organizations::DEFAULT_SLUG, conflicts_with = "new_org")]
    org: String,
    /// Create a new organization with this name and add the user to it.
    #[arg(long = "new-org")]
    new_org: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let outcome = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(settings)) => serve(settings),
        Some(Command::User(UserCommand::Add(args))) => add_user(args),
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
            anyhow::ensure!(!name.is_empty() && name.chars().count() <= 100, "--new-org needs a name of 1–100 characters");
            let slug = OrganizationSlug::from_name(name);
            anyhow::ensure!(
                organizations::find_by_slug(&mut conn, slug.as_str())?.is_none(),
                "an organization with the slug \"{}\" exists already; add the user with --org {}",
                slug.as_str(),
                slug.as_str()
            );
            organizations::create(&mut conn, &slug, name)?
        }
        None => organizations::find_by_slug(&mut conn, &args.org)?
            .ok_or_else(|| anyhow::anyhow!("no organization with the slug \"{}\"", args.org))?,
    };
    anyhow::ensure!(users::find_by_email(&mut conn, &email)?.is_none(), "a user with this email exists already");
    let user = users::create(&mut conn, organization.id, &email, &password_hash, args.role)?;
    println!(
        "Added {} as {} of {} ({}).",
        user.email,
        args.role.as_str(),
        organization.name,
        organization.slug
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
