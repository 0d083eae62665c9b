"""Admin CLI: ``flask --app wsgi admin …`` (DESIGN.md §8), usable from scripts."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from . import clock, demo, flow_settings, keys, rekey, retention, teams
from .crypto import UndecryptableSecret
from .demo import DEMO_EMAIL, DEMO_PASSWORD
from .errors import BadRequest, ServiceError, TransportUnavailable

#: ``AppGroup`` runs every command inside an app context.
admin = AppGroup("admin", help="Manage teams, users, keys and plans.")


def _fail(exc: ServiceError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(1)


@admin.command("create-team")
@click.argument("name")
@click.option("--plan", default=None, help="Plan name (free, pro, scale, or a configured one).")
@click.option("--webhook-url", default=None, help="Webhook URL of the default project.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create_team(name: str, plan: str | None, webhook_url: str | None, as_json: bool) -> None:
    """Create a team with project "default" and a first API key."""
    try:
        created = teams.create_team(name, plan or current_app.config["DEFAULT_PLAN"], webhook_url)
    except ServiceError as exc:
        _fail(exc)
        return
    info = {
        "team": {"id": created.team.id, "name": created.team.name, "plan": created.team.plan},
        "project": {
            "id": created.project.id,
            "name": created.project.name,
            "webhookUrl": created.project.webhook_url,
        },
        "apiKey": created.api_key,
        "webhookSecret": created.project.webhook_secret,
        "webhookBearerToken": created.project.webhook_bearer_token,
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"team      {created.team.name} (id {created.team.id}, plan {created.team.plan})")
    click.echo(f"project   default (id {created.project.id})")
    click.echo(f"api key   {created.api_key}   (shown once, store it now)")
    click.echo(f"secret    {created.project.webhook_secret}   (signing secret, never sent)")
    click.echo(f"bearer    {created.project.webhook_bearer_token}   (Authorization: Bearer …)")


@admin.command("create-key")
@click.argument("team")
@click.option("--project", "project_name", default="default", show_default=True)
@click.option("--label", default="cli", show_default=True)
@click.option(
    "--scope",
    type=click.Choice(keys.SCOPES),
    default=keys.JOBS,
    show_default=True,
    help="jobs: jobs, batch, usage, reading the project; admin: also the project's settings.",
)
def create_key(team: str, project_name: str, label: str, scope: str) -> None:
    """Create an API key for a team's project and print the token (shown once)."""
    try:
        team_row = teams.find_team(team)
    except ServiceError as exc:
        _fail(exc)
        return
    project = teams.project_named(team_row, project_name)
    if project is None:
        click.echo(f"error: team {team!r} has no project {project_name!r}", err=True)
        sys.exit(1)
    _, token = keys.issue_key(project, label, scope)
    click.echo(token)


@admin.command("create-user")
@click.argument("email")
@click.argument("team")
@click.option("--password-stdin/--prompt", default=True, help="Read the password from stdin.")
def create_user(email: str, team: str, password_stdin: bool) -> None:
    """Create a dashboard user of TEAM; the password is read from stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = teams.create_user(email, password, teams.find_team(team))
    except ServiceError as exc:
        _fail(exc)
        return
    click.echo(f"user {user.email} (id {user.id}) created in team {user.team.name}")


@admin.command("set-plan")
@click.argument("team")
@click.argument("plan")
def set_plan(team: str, plan: str) -> None:
    """Move TEAM to PLAN."""
    try:
        team_row = teams.find_team(team)
        teams.set_plan(team_row, plan)
    except ServiceError as exc:
        _fail(exc)
        return
    click.echo(f"team {team_row.name} is now on plan {plan}")


@admin.command("set-flow")
@click.argument("project_id")
@click.option("--parallelism", default=None, metavar="N", help="At most N attempts in flight.")
@click.option("--reset-parallelism", is_flag=True, help="Back to the plan's cap.")
@click.option("--rate", default=None, metavar="R", help="At most R attempt starts a second.")
@click.option("--no-rate", is_flag=True, help="No rate limit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def set_flow(
    project_id: str,
    parallelism: str | None,
    reset_parallelism: bool,
    rate: str | None,
    no_rate: bool,
    as_json: bool,
) -> None:
    """Set a project's flow control (only the options given change); print what is in force."""
    if parallelism is not None and reset_parallelism:
        _fail(BadRequest("give --parallelism or --reset-parallelism, not both"))
    if rate is not None and no_rate:
        _fail(BadRequest("give --rate or --no-rate, not both"))
    changes: dict[str, object] = {}
    try:
        project = teams.find_project(project_id)
        if reset_parallelism:
            changes["parallelism"] = None
        elif parallelism is not None:
            changes["parallelism"] = flow_settings.parse_parallelism(parallelism)
        if no_rate:
            changes["rate"] = None
        elif rate is not None:
            changes["rate"] = flow_settings.parse_rate(rate)
        status = (
            flow_settings.set_flow_control(project, **changes)
            if changes
            else flow_settings.flow_status(project)
        )
    except ServiceError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps({"projectId": project.id, **status.to_dict()}))
        return
    chosen = "set" if status.parallelism_is_set else "the plan's cap"
    click.echo(f"project      {project.name} (id {project.id}, team {project.team.name})")
    click.echo(f"parallelism  {status.parallelism} ({chosen}; {status.plan} cap {status.cap})")
    click.echo(f"rate         {f'{status.rate:g}/s' if status.rate is not None else 'none'}")
    click.echo(f"effective    {status.effective}")
    if status.paused_until:
        click.echo(f"paused until {clock.isoformat(status.paused_until)}")


@admin.command("seed-demo")
@click.option("--webhook-url", default=None, help="Defaults to the built-in echo receiver.")
@click.option("--history", is_flag=True, help="Also add a month of finished demo jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def seed_demo(webhook_url: str | None, history: bool, as_json: bool) -> None:
    """Create (once) the demo team, user and project; print a fresh demo API key.

    Running it again keeps the data and replaces the previous demo key.
    """
    public_url = current_app.config["PUBLIC_URL"].rstrip("/")
    try:
        seeded = demo.seed(public_url, webhook_url, history)
    except ServiceError as exc:
        _fail(exc)
        return
    project, token = seeded.project, seeded.api_key
    info = {
        "dashboard": f"{public_url}/",
        "login": {"email": DEMO_EMAIL, "password": DEMO_PASSWORD},
        "apiKey": token,
        "webhookUrl": project.webhook_url,
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    curl = (
        f"curl -s -X POST {public_url}/api/jobs/dispatch -H 'Authorization: Bearer {token}' "
        '-H \'Content-Type: application/json\' -d \'{"payload": {"hello": "world"}}\''
    )
    click.echo(f"  Dashboard : {public_url}/")
    click.echo(f"  Login     : {DEMO_EMAIL} / {DEMO_PASSWORD}")
    click.echo(f"  API key   : {token}")
    click.echo(f"  Webhook   : {project.webhook_url}")
    click.echo(f"  Try it    : {curl}")


@admin.command("rotate-encryption-key")
def rotate_encryption_key() -> None:
    """Re-encrypt every stored secret with the first key of DATA_ENCRYPTION_KEY.

    Rotation: put the new key first in DATA_ENCRYPTION_KEY (keep the old one after it) on every
    process, run this, then drop the old key.
    """
    try:
        done = rekey.reencrypt_all()
    except UndecryptableSecret as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"re-encrypted {done.values} secrets in {done.rows} rows with the first key of "
        "DATA_ENCRYPTION_KEY"
        + (f"; {done.skipped} rows changed meanwhile, run it again" if done.skipped else "")
    )


@admin.command("purge")
@click.option(
    "--older-than", "older_than", required=True, metavar="DAYS", help="Age in days (at least 1)."
)
@click.option("--batch-size", default=retention.BATCH, show_default=True, help="Jobs per batch.")
@click.option("--pause", default=0.0, show_default=True, help="Seconds to sleep between batches.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def purge(older_than: str, batch_size: int, pause: float, dry_run: bool, as_json: bool) -> None:
    """Delete finished jobs (COMPLETED, FAILED, CANCELLED) older than DAYS, and their attempts."""
    try:
        done = retention.purge(
            retention.parse_days(older_than), batch_size=batch_size, dry_run=dry_run, pause=pause
        )
    except ServiceError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(done.to_dict()))
        return
    verb = "would delete" if done.dry_run else "deleted"
    click.echo(
        f"{verb} {done.jobs} jobs and {done.attempts} attempts finished before "
        f"{clock.isoformat(done.cutoff)}" + ("" if done.dry_run else f" ({done.batches} batches)")
    )


@admin.command("reconcile")
@click.option("--full", is_flag=True, help="Check every live job, not only suspicious ones.")
def reconcile(full: bool) -> None:
    """Run one reconciler pass now and print what it did."""
    from . import reconciler

    try:
        report = reconciler.reconcile(full=full)
    except TransportUnavailable as exc:
        click.echo(f"error: Redis unreachable: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(report))
