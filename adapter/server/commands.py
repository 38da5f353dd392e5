"""The FHIR server commands: `sync`, `subscribe` and `sandbox` (loaded lazily by adapter.cli).

Exit statuses as for `claim`: 0 every session clean, 1 some held, 2 input or usage error,
4 the FHIR server failed. Errors reach standard error as an OperationOutcome through
`adapter.cli.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import orjson

from ..errors import AdapterError, FhirProtocolError, UsageError
from ..fhir.client import FhirClient, make_client
from ..fhir.responses import entry_results, outcome_errors
from ..read.uses import FACET_CODE_SYSTEMS, facet_code_tokens, facet_codes
from .loader import as_transaction, prefixed_id, transaction_chunks
from .options import fhir_server_options, hook_token_option, server_options_from
from .sync import SyncOutcome, combined_exit, failed_outcome, sync_patient, sync_procedure, sync_since

if TYPE_CHECKING:
    from ..model import Use

_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
SUBSCRIPTION_TAG_SYSTEM = "urn:facet-adapter:subscription"
SUBSCRIPTION_TAG = "facet-procedures"
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # a checkout: adapter/server/ → the repository


def _pipeline_options(payer: str | None, use: str, pos: str | None, prior_auth: str | None) -> Any:
    from ..pipeline import Options, validate_options

    options = Options(
        payer=payer.lower() if payer else None, use=cast("Use", use), pos=pos, prior_auth=prior_auth or None
    )
    validate_options(options)
    return options


def _write(data: bytes | str) -> None:
    if isinstance(data, str):
        sys.stdout.write(data)
    else:
        sys.stdout.buffer.write(data)
    sys.stdout.flush()


# --------------------------------------------------------------------------- sync


@click.command()
@click.option("--procedure", "procedure_id", help="Sync this facet Procedure's session (id or Procedure/id).")
@click.option("--patient", "patient_id", help="Sync this patient's latest facet session.")
@click.option("--since", help="Sync every session with a facet procedure updated since this date or instant.")
@click.option("--payer", help="Payer profile (rule pack), e.g. medicare, commercial. Default: from the Coverage.")
@click.option("--use", type=click.Choice(["claim", "preauthorization"]), default="claim", show_default=True)
@click.option("--pos", help="CMS place-of-service code (two digits). Default: from the encounter's location.")
@click.option("--prior-auth", help="Prior authorization number on record for this session.")
@click.option("--dry-run", is_flag=True, help="Read and code, but write nothing; print what would be written.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="text: a table; json: the outcomes. Default: text on a terminal, else json.",
)
@click.option("--payer-url", help="Submit each written Claim to this payer's FHIR base and store its answer.")
@click.option("--payer-token", envvar="FACET_ADAPTER_PAYER_TOKEN", help="Bearer token for the payer.")
@click.option("--force-submit", is_flag=True, help="With --payer-url, submit held (draft) Claims too.")
@click.option(
    "--payer-budget", type=click.FloatRange(min=0.1), default=15.0, show_default=True, help="Seconds to retry $submit."
)
@click.option(
    "--payer-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to follow a pended answer with $inquire.",
)
@fhir_server_options(fhir_token_aliases=("--token",))
def sync(
    procedure_id: str | None,
    patient_id: str | None,
    since: str | None,
    payer: str | None,
    use: str,
    pos: str | None,
    prior_auth: str | None,
    dry_run: bool,
    output_format: str | None,
    payer_url: str | None,
    payer_token: str | None,
    force_submit: bool,
    payer_budget: float,
    payer_wait: float,
    **server: Any,
) -> None:
    """Code and check facet sessions on a FHIR server and write their Claims back.

    Exactly one of --procedure, --patient or --since. A Claim is created once per session (found
    again by its identifier, updated when the record changed); a held Claim is written as draft
    with a Task for the work queue."""
    chosen = [
        name for name, value in (("--procedure", procedure_id), ("--patient", patient_id), ("--since", since)) if value
    ]
    if len(chosen) != 1:
        raise UsageError("Give exactly one of --procedure, --patient or --since.")
    options = _pipeline_options(payer, use, pos, prior_auth)
    client = make_client(server_options_from(**server))
    submit = _payer_options(payer_url, payer_token, force_submit, payer_budget, payer_wait)
    if procedure_id:
        outcomes = [sync_procedure(client, procedure_id, options, dry_run=dry_run, payer=submit)]
    elif patient_id:
        outcomes = [sync_patient(client, patient_id, options, dry_run=dry_run, payer=submit)]
    else:
        outcomes = sync_since(client, str(since), options, dry_run=dry_run, payer=submit)
    chosen_format = output_format or ("text" if sys.stdout.isatty() else "json")
    if chosen_format == "json":
        payload = {"dryRun": dry_run, "results": [o.to_dict(resources=dry_run) for o in outcomes]}
        _write(orjson.dumps(payload, option=_DUMP))
    else:
        _write(sync_text(outcomes, dry_run=dry_run))
    raise SystemExit(combined_exit(outcomes))


def _payer_options(url: str | None, token: str | None, force: bool, budget: float, wait: float) -> Any:
    """`--payer-url` and friends as adapter.server.answers.PayerOptions (None without a URL)."""
    if url is None:
        if force or token:
            raise UsageError("--payer-token and --force-submit need --payer-url.")
        return None
    if not url.startswith(("http://", "https://")):
        raise UsageError("--payer-url must be the payer's http(s) FHIR base.")
    from .answers import PayerOptions

    return PayerOptions(url=url, token=token, force=force, budget=budget, wait=wait)


def _findings_text(outcome: SyncOutcome) -> str:
    if outcome.error is not None:
        issue = (outcome.error.get("issue") or [{}])[0]
        return f"not synced: {issue.get('details', {}).get('text', 'error')}"
    shown = [f"{f.rule_id}({f.severity[0].upper()})" for f in outcome.findings if f.severity in ("error", "warning")]
    info = sum(1 for f in outcome.findings if f.severity == "information")
    text = " ".join(shown) or "none"
    return text + (f" +{info} info" if info else "")


def sync_text(outcomes: Sequence[SyncOutcome], *, dry_run: bool) -> str:
    out = []
    if not outcomes:
        out.append("No facet session to sync.")
    else:
        out.append(f"{'Procedure':<34} {'Claim':<44} {'Status':<7} {'Claim action':<13} {'Task':<13} Lines / findings")
        for o in outcomes:
            claim = f"Claim/{o.claim_id}" if o.claim_id else "-"
            task = o.task_action if o.task_action != "none" else "-"
            lines = " ".join(o.lines) or "-"
            out.append(
                f"{o.procedure:<34} {claim:<44} {o.claim_status or '-':<7} {o.claim_action:<13} {task:<13} "
                f"{lines} | {_findings_text(o)}"
            )
            if o.payer is not None:
                answered = o.payer.get("result") or f"not submitted ({o.payer.get('why')})"
                number = f", authorization {o.payer['authorization']}" if o.payer.get("authorization") else ""
                stored = f", ClaimResponse/{o.payer['claimResponseId']}" if o.payer.get("claimResponseId") else ""
                out.append(f"{'':<34} payer: {answered}{number}{stored}")
    held = sum(1 for o in outcomes if o.exit_code == 1)
    failed = sum(1 for o in outcomes if o.exit_code >= 2)
    out.append("")
    out.append(
        f"{len(outcomes)} session(s): {len(outcomes) - held - failed} ready, {held} held, {failed} not synced"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    if dry_run:
        for o in outcomes:
            if o.claim is not None and o.claim_action.startswith("would-"):
                out.append(f"\nWould {o.claim_action[6:]} the Claim for {o.procedure}:")
                out.append(orjson.dumps(o.claim, option=orjson.OPT_INDENT_2).decode())
            if o.task is not None and o.task_action.startswith("would-"):
                out.append(f"\nWould {o.task_action[6:]} the Task for {o.procedure}:")
                out.append(orjson.dumps(o.task, option=orjson.OPT_INDENT_2).decode())
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- subscribe


def subscription_criteria() -> str:
    return f"Procedure?code={facet_code_tokens()}"


def desired_subscription(endpoint: str, token: str | None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}
    if token:
        channel["header"] = [f"Authorization: Bearer {token}"]
    return {
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": SUBSCRIPTION_TAG_SYSTEM, "code": SUBSCRIPTION_TAG}]},
        "status": "requested",
        "reason": "facet-adapter: code and check facet joint procedures as they are recorded",
        "criteria": subscription_criteria(),
        "channel": channel,
    }


def subscribe_to(client: FhirClient, endpoint: str, token: str | None) -> tuple[dict[str, Any], str]:
    """Create the rest-hook Subscription, or refresh the one this adapter made earlier for the
    same endpoint (found by its tag). Returns (the Subscription, "created" | "refreshed")."""
    wanted = desired_subscription(endpoint, token)
    existing = [
        s
        for s in client.search("Subscription", [("_tag", f"{SUBSCRIPTION_TAG_SYSTEM}|{SUBSCRIPTION_TAG}")])
        if s.get("resourceType") == "Subscription" and s.get("channel", {}).get("endpoint") == endpoint
    ]
    if not existing:
        stored, _ = client.create(wanted)
        return stored, "created"
    existing.sort(key=lambda s: str(s.get("id")))
    current = existing[0]
    # The update re-sends `requested` (R4: a client sets only requested or off): HAPI and the
    # test server activate it again, also one the server had set `off` or `error`, and the
    # public HAPI server's hourly expiry looks at _lastUpdated, which this bumps.
    stored = client.update({**current, **wanted, "id": current["id"]})
    for extra in existing[1:]:
        client.delete("Subscription", str(extra["id"]))
    return stored, "refreshed"


@click.command()
@click.option("--endpoint", required=True, help="The adapter's rest-hook URL the server calls.")
@hook_token_option(
    "Sent by the server as 'Authorization: Bearer <token>' on each notification (or FACET_ADAPTER_HOOK_TOKEN)."
)
@fhir_server_options(fhir_token_aliases=("--server-token",))
def subscribe(
    endpoint: str,
    hook_token: str | None,
    **server: Any,
) -> None:
    """Create or refresh the rest-hook Subscription for the facet CPT codes."""
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError("--endpoint must be an http(s) URL.")
    client = make_client(server_options_from(**server))
    stored, action = subscribe_to(client, endpoint, hook_token)
    headers = [h.split(":", 1)[0] + ": ***" for h in stored.get("channel", {}).get("header", [])]
    _write(
        f"Subscription/{stored.get('id')} {action}: status {stored.get('status')}, endpoint {endpoint}, "
        f"payload {stored.get('channel', {}).get('payload')}, headers {headers or 'none'}\n"
        f"criteria: Procedure?code= the {len(facet_codes())} facet codes under {len(FACET_CODE_SYSTEMS)} code systems "
        "(CPT and both HCPCS URIs)\n"
    )


# --------------------------------------------------------------------------- sandbox


def example_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("input.*")))


def load_example(client: FhirClient, directory: Path, id_prefix: str) -> dict[str, Any]:
    """Load one example's input into the server as a transaction of PUTs (idempotent)."""
    source = next(iter(sorted(directory.glob("input.*"))))
    bundle = as_transaction(source.read_bytes(), id_prefix=id_prefix, name=source.name)
    failed = [
        r
        for chunk in transaction_chunks(bundle)
        for r in entry_results(client.transaction(chunk))
        if r.status is None or r.status >= 400 or outcome_errors(r.outcome)
    ]
    if failed:
        # A transaction is all or nothing, so this means a server that answers it like a batch.
        raise FhirProtocolError(
            f"The FHIR server at {client.transport.shown_base} did not store {len(failed)} resource(s) of "
            f"{directory.name} (transaction answered entry by entry).",
            base_url=client.transport.shown_base,
        )
    return bundle


def example_sessions(directory: Path, options: Any) -> list[str]:
    """Focus keys of every session in the example: its earlier facet sessions, then the latest."""
    from ..pipeline import process

    source = next(iter(sorted(directory.glob("input.*"))))
    result = process(source.read_bytes(), options, name=source.name)
    keys = [] if options.use == "preauthorization" else [s.keys[0] for s in result.case.history]
    return [*keys, result.case.session.keys[0]]


def sandbox_rows(client: FhirClient, root: Path, prefix: str) -> list[tuple[str, SyncOutcome]]:
    from ..pipeline import Options

    rows: list[tuple[str, SyncOutcome]] = []
    for directory in example_dirs(root):
        args_file = directory / "args.json"
        args = orjson.loads(args_file.read_bytes()) if args_file.exists() else {}
        options = Options(
            payer=args.get("payer"),
            use=args.get("use", "claim"),
            pos=args.get("pos"),
            prior_auth=args.get("prior_auth"),
        )
        id_prefix = f"{prefix}{directory.name}-" if prefix else ""
        load_example(client, directory, id_prefix)
        try:
            sessions = example_sessions(directory, options)
        except AdapterError as exc:
            rows.append((directory.name, failed_outcome(directory.name, exc)))
            continue
        for key in sessions:
            type_, _, id_ = key.partition("/")
            try:
                outcome = sync_procedure(client, f"{type_}/{prefixed_id(id_prefix, id_)}", options)
            except AdapterError as exc:
                if exc.exit_code == 4:
                    raise
                outcome = failed_outcome(key, exc)
            rows.append((directory.name, outcome))
    return rows


def sandbox_text(rows: Sequence[tuple[str, SyncOutcome]]) -> str:
    out = [f"{'Example':<34} {'Procedure':<52} {'Claim id':<38} {'Status':<7} {'Lines':<26} Findings"]
    for example, o in rows:
        lines = " ".join(o.lines) or "-"
        out.append(
            f"{example:<34} {o.procedure:<52} {o.claim_id or '-':<38} {o.claim_status or '-':<7} {lines:<26} "
            f"{_findings_text(o)}"
        )
    held = sum(1 for _, o in rows if o.exit_code == 1)
    failed = sum(1 for _, o in rows if o.exit_code >= 2)
    out.append("")
    out.append(f"{len(rows)} session(s): {len(rows) - held - failed} ready, {held} held, {failed} not synced")
    return "\n".join(out) + "\n"


@click.command()
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of examples (each with input.* and args.json). Default: the project's examples/.",
)
@click.option(
    "--id-prefix",
    default="fa-",
    show_default=True,
    help="Prefix for every loaded id (then the example name), so examples that reuse ids, or other "
    "data on a shared server, are not overwritten. Empty: load the ids as they are.",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@fhir_server_options(fhir_token_aliases=("--token",))
def sandbox(
    examples_dir: str | None,
    id_prefix: str,
    output_format: str,
    **server: Any,
) -> None:
    """Load the examples into a FHIR server, sync every facet session in them, print what came back."""
    root = Path(examples_dir) if examples_dir else REPO_EXAMPLES
    if not root.is_dir() or not example_dirs(root):
        raise UsageError("No examples found; give --examples DIR (folders with input.* and args.json).")
    client = make_client(server_options_from(**server))
    rows = sandbox_rows(client, root, id_prefix)
    if output_format == "json":
        payload = [dict(o.to_dict(), example=example) for example, o in rows]
        _write(orjson.dumps(payload, option=_DUMP))
    else:
        _write(sandbox_text(rows))
    raise SystemExit(combined_exit([o for _, o in rows]))
