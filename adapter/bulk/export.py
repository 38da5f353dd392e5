"""The Bulk Data Access IG `$export` client of `bulk --fhir-base` (docs/bulk.md, from a server).

1. Kick-off: `GET [base]/$export` (or `[base]/Group/[id]/$export`) with `Prefer: respond-async`,
   `_type` limited to the resource types the reader uses (`adapter.read.uses`), `_since` when
   asked, `_outputFormat=application/fhir+ndjson`; the server answers 202 with `Content-Location`.
2. Status: that URL is polled; 202 means in progress (`X-Progress` is shown, `Retry-After` is
   honoured), 200 brings the manifest, an error status ends the export with the server's answer.
3. Files: every `output` file is downloaded, streamed to disk, with the credentials of the
   other server commands when the manifest says `requiresAccessToken`; `error` files (the
   server's OperationOutcomes) are downloaded beside them and counted in the summary.
4. `DELETE` of the status URL tells the server the files may go.

Resumable: `OUTDIR/export/state.json` records the kick-off, the status URL, the manifest and
the files already complete. Run the same command again after an interruption and it goes on
where it stopped (a changed request, or a finished export, starts afresh).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from ..errors import FhirProtocolError, FhirServerUnavailable, UsageError
from ..fhir.client import FhirClient, ServerOptions, make_client
from ..fhir.responses import status_error
from ..fhir.transport import parse_retry_after
from ..read.uses import DECLARED_TYPES

log = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
DEFAULT_WAIT_S = 2.0  # between polls when the server gives no Retry-After
MAX_WAIT_S = 300.0  # a Retry-After longer than this is shortened
MAX_EXPORT_S = 24 * 3600.0  # give up polling after a day (the state file keeps the job)
_CHUNK = 1 << 20
_GROUP_ID = r"[A-Za-z0-9\-.]{1,64}"


def export_types() -> tuple[str, ...]:
    """The `_type` list: what the reader reads, declared once in adapter.read.uses."""
    return tuple(sorted(DECLARED_TYPES))


@dataclass(frozen=True, slots=True)
class ExportRequest:
    group: str | None = None
    since: dt.date | None = None
    types: tuple[str, ...] = field(default_factory=export_types)

    def params(self) -> list[tuple[str, str]]:
        params = [("_outputFormat", NDJSON), ("_type", ",".join(self.types))]
        if self.since is not None:
            params.append(("_since", f"{self.since.isoformat()}T00:00:00Z"))
        return params

    def path(self) -> str:
        return f"Group/{self.group}/$export" if self.group else "$export"

    def describe(self) -> dict[str, Any]:
        return {"group": self.group, "since": self.since.isoformat() if self.since else None, "types": list(self.types)}


@dataclass
class DownloadedExport:
    folder: Path  # the NDJSON files, the bulk runner's input
    manifest: dict[str, Any]
    files: int
    error_files: int
    resumed: bool

    def summary(self) -> dict[str, Any]:
        return {
            "transaction_time": self.manifest.get("transactionTime"),
            "files": self.files,
            "server_error_files": self.error_files,
            "resumed": self.resumed,
        }


class _State:
    """OUTDIR/export/state.json, written through a temporary name at every step."""

    def __init__(self, folder: Path, base_url: str, request: ExportRequest) -> None:
        self.path = folder / "state.json"
        self.identity = {"base_url": base_url, "request": request.describe()}
        self.data: dict[str, Any] = {}
        if self.path.exists():
            try:
                saved = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                saved = {}
            if isinstance(saved, dict) and saved.get("identity") == self.identity and not saved.get("finished"):
                self.data = saved
        if not self.data:
            self.data = {"identity": self.identity, "status_url": None, "manifest": None, "done": []}

    @property
    def resumed(self) -> bool:
        return bool(self.data.get("status_url"))

    def save(self) -> None:
        temporary = self.path.with_name(".state.json.partial")
        temporary.write_bytes(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
        temporary.replace(self.path)


def run_export(
    options: ServerOptions, request: ExportRequest, outdir: Path, *, progress: bool = False
) -> DownloadedExport:
    """Kick off (or resume) the export and download its files into `outdir/export/files`."""
    if request.group is not None:
        import re

        if not re.fullmatch(_GROUP_ID, request.group):
            raise UsageError("--group is a Group id: letters, digits, '-' and '.', at most 64.")
    folder = outdir / "export"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot write to {outdir} ({exc.strerror}).") from None
    with make_client(options) as client:
        state = _State(folder, client.base_url, request)
        resumed = state.resumed
        files = folder / "files"
        if not resumed and files.exists():
            shutil.rmtree(files)  # an earlier, different or finished export
        if state.data["manifest"] is None:
            if state.data["status_url"] is None:
                state.data["status_url"] = _kick_off(client, request)
                state.save()
            state.data["manifest"] = _wait(client, state.data["status_url"], progress)
            state.save()
        manifest: dict[str, Any] = state.data["manifest"]
        count, errors = _download_all(client, manifest, folder, state)
        _forget(client, state.data["status_url"])
        state.data["finished"] = True
        state.save()
    return DownloadedExport(files, manifest, count, errors, resumed)


def _kick_off(client: FhirClient, request: ExportRequest) -> str:
    transport = client.transport
    url = client.url(request.path())
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    response = transport.send("GET", url, params=request.params(), headers=headers, idempotent=True)
    if response.status != 202:
        if response.status >= 400:
            raise _error(client, response, "GET", url, request.params())
        raise FhirProtocolError(
            f"The FHIR server at {transport.shown_base} answered {response.status} to a Bulk Data kick-off; "
            "it should answer 202 Accepted (is $export supported?).",
            status=response.status,
            method="GET",
            path=transport.path_of(url),
            base_url=transport.shown_base,
        )
    location = response.headers.get("Content-Location")
    if not location:
        raise FhirProtocolError(
            f"The FHIR server at {transport.shown_base} accepted the $export but sent no Content-Location to poll.",
            status=202,
            method="GET",
            path=transport.path_of(url),
            base_url=transport.shown_base,
        )
    log.info("bulk export accepted; polling its status")
    return str(location)


def _wait(client: FhirClient, status_url: str, progress: bool) -> dict[str, Any]:
    transport = client.transport
    started = time.monotonic()
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="export", bar_format="{desc}: {elapsed} {postfix}", leave=False)
    try:
        while True:
            response = transport.send("GET", status_url, headers={"Accept": "application/json"}, idempotent=True)
            if response.status == 200:
                manifest = response.json()
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise FhirProtocolError(
                        f"The FHIR server at {transport.shown_base} finished the export with no manifest.",
                        status=200,
                        method="GET",
                        path=transport.path_of(status_url),
                        base_url=transport.shown_base,
                    )
                return manifest
            if response.status >= 400:
                raise _error(client, response, "GET", status_url, None)
            wait = parse_retry_after(response.headers.get("Retry-After"))
            wait = min(wait if wait is not None else DEFAULT_WAIT_S, MAX_WAIT_S)
            shown = (response.headers.get("X-Progress") or "in progress")[:100]
            if bar is not None:
                bar.set_postfix_str(shown)
            log.info("bulk export: %s; next poll in %.1f s", shown, wait)
            if time.monotonic() + wait - started > MAX_EXPORT_S:
                raise FhirServerUnavailable(
                    f"The FHIR server at {transport.shown_base} had not finished the export after "
                    f"{MAX_EXPORT_S / 3600:g} h; run the same command again to go on waiting.",
                    method="GET",
                    path=transport.path_of(status_url),
                    base_url=transport.shown_base,
                )
            time.sleep(wait)
    finally:
        if bar is not None:
            bar.close()


def _download_all(client: FhirClient, manifest: dict[str, Any], folder: Path, state: _State) -> tuple[int, int]:
    """Download every output and error file not yet complete; (outputs, error files)."""
    secured = bool(manifest.get("requiresAccessToken"))
    done: list[str] = state.data["done"]
    wanted: list[tuple[str, str, Path]] = []
    for kind, sub in (("output", "files"), ("error", "server-errors")):
        entries = manifest.get(kind) or []
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                continue
            type_ = entry.get("type") if isinstance(entry.get("type"), str) else "Resource"
            name = f"{number:05d}-{type_}.ndjson"
            wanted.append((f"{sub}/{name}", entry["url"], folder / sub / name))
    for name, url, target in wanted:
        if name in done and target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(client, url, target, secured)
        done.append(name)
        state.save()
    outputs = sum(1 for name, _, _ in wanted if name.startswith("files/"))
    (folder / "files").mkdir(exist_ok=True)  # an export of nothing is still an input folder
    return outputs, len(wanted) - outputs


def _download(client: FhirClient, url: str, target: Path, secured: bool) -> None:
    """Stream one file to disk (through a temporary name), retrying broken transfers."""
    transport = client.transport
    partial = target.with_name(f".{target.name}.partial")
    shown = transport.path_of(url)
    attempt = 0
    while True:
        headers = {"Accept": NDJSON, "User-Agent": transport.user_agent}
        if secured and transport.auth is not None:
            headers.update(transport.auth.headers(transport))
        try:
            with transport.session.get(
                url, headers=headers, stream=True, timeout=transport.timeout, allow_redirects=True
            ) as response:
                if response.status_code == 401 and secured and transport.auth is not None and attempt == 0:
                    transport.auth.invalidate()
                    attempt += 1
                    continue
                if response.status_code in (429, 503) and attempt < transport.retries:
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                    time.sleep(min(wait if wait is not None else DEFAULT_WAIT_S * (attempt + 1), MAX_WAIT_S))
                    attempt += 1
                    continue
                if response.status_code >= 400:
                    raise FhirServerUnavailable(
                        f"The FHIR server at {transport.shown_base} answered {response.status_code} to the download "
                        f"of {shown}"
                        + (
                            " (the export's files have expired: delete export/state.json and run again)"
                            if response.status_code in (404, 410)
                            else ""
                        )
                        + ".",
                        status=response.status_code,
                        method="GET",
                        path=shown,
                        base_url=transport.shown_base,
                    )
                with partial.open("wb") as handle:
                    for chunk in response.iter_content(_CHUNK):
                        handle.write(chunk)
            partial.replace(target)
            log.info("downloaded %s", target.name)
            return
        except requests.exceptions.RequestException as exc:
            if attempt >= transport.retries:
                raise FhirServerUnavailable(
                    f"The download of {shown} from the FHIR server at {transport.shown_base} failed "
                    f"({type(exc).__name__}) after {attempt + 1} attempt(s); run the same command again to resume.",
                    method="GET",
                    path=shown,
                    base_url=transport.shown_base,
                ) from None
            attempt += 1
            time.sleep(min(DEFAULT_WAIT_S * attempt, MAX_WAIT_S))


def _forget(client: FhirClient, status_url: str | None) -> None:
    """Tell the server the files were taken; a server that refuses only keeps them longer."""
    if not status_url:
        return
    try:
        client.transport.send("DELETE", status_url, idempotent=True)
    except FhirServerUnavailable:
        log.info("the FHIR server did not answer the DELETE of the finished export")


def _error(client: FhirClient, response: Any, method: str, url: str, params: Any) -> Exception:
    transport = client.transport
    return status_error(
        response,
        method=method,
        request=transport.describe(method, url, params),
        path=transport.path_of(url),
        base_url=transport.shown_base,
    )
