"""The signature doctor: say exactly why a delivery does not verify.

``diagnose`` looks at the headers and body a receiver got, with the credentials it verifies
with, and reports each problem it finds: a missing header, a timestamp outside the tolerance
(by how much), a wrong secret (and whether the previous secret would verify: a rotation), a
body that is not the bytes that were sent (the first differing byte, and whether JSON encoded
again explains it: the framework parsed the body and re-encoded it), a bearer token mismatch.

It backs ``dispatched verify`` and the Dispatched dashboard's job page (which knows the exact
bytes it sent and passes them as ``sent_body``). It needs only the standard library and
``standardwebhooks``.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import _signature as sig
from ._signature import HeadersLike

OK, NOTE, PROBLEM = "ok", "note", "problem"
RAW_BODY_HINT = (
    "verify the raw bytes: Flask request.get_data(), Django request.body, "
    "FastAPI/Starlette await request.body()"
)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # "ok", "note" or "problem"
    message: str


@dataclass
class Diagnosis:
    """What the doctor found; ``verified`` says whether ``verify()`` would accept the request
    with the given secret / bearer token."""

    verified: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == PROBLEM]

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def text(self) -> str:
        marks = {OK: "ok  ", NOTE: "note", PROBLEM: "FAIL"}
        lines = [f"[{marks[f.severity]}] {f.code}: {f.message}" for f in self.findings]
        verdict = "VERIFIES" if self.verified else "DOES NOT VERIFY"
        return "\n".join([f"Delivery {verdict}", *lines])

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "findings": [
                {"code": f.code, "severity": f.severity, "message": f.message}
                for f in self.findings
            ],
        }


def parse_header_block(text: str) -> dict[str, str]:
    """Parse pasted headers: ``Name: value`` lines (an HTTP request line, curl's ``-H '…'``
    and blank lines are skipped) or a JSON object. Names are lower-cased."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            document = None
        if isinstance(document, dict):
            return {str(k).lower(): str(v) for k, v in document.items()}
    headers: dict[str, str] = {}
    for line in stripped.splitlines():
        line = line.strip()
        match = re.match(r"""^(?:-H|--header)\s+(['"])(.*)\1\s*\\?$""", line)
        if match:
            line = match.group(2)
        name, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name.strip()):
            continue  # a request line, a status line, a comment
        headers[name.strip().lower()] = value.strip()
    return headers


def diagnose(
    headers: HeadersLike | str,
    body: bytes | str,
    *,
    secret: str | None = None,
    previous_secret: str | None = None,
    bearer_token: str | None = None,
    tolerance: float = sig.DEFAULT_TOLERANCE,
    now: float | datetime | None = None,
    sent_body: bytes | None = None,
) -> Diagnosis:
    """Diagnose one delivery.

    Args:
        headers: the headers the receiver got (a mapping, pairs, or a pasted header block).
        body: the body the receiver verified.
        secret: the signing secret the receiver verifies with.
        previous_secret: the project's other (previous) secret, to recognise a rotation.
        bearer_token: the bearer token the receiver expects, if it checks one.
        tolerance: the receiver's timestamp tolerance in seconds.
        now: when the receiver got it (default: now).
        sent_body: the bytes Dispatched sent, when known (the dashboard knows them).
    """
    if isinstance(headers, str):
        headers = parse_header_block(headers)
    doctor = _Doctor(
        sig.lower_headers(headers),
        body.encode("utf-8") if isinstance(body, str) else bytes(body),
        secret.strip() if secret else None,
        previous_secret.strip() if previous_secret else None,
        bearer_token.strip() if bearer_token else None,
        float(tolerance),
        sig.now_seconds(now),
        sent_body,
    )
    return doctor.run()


class _Doctor:
    def __init__(
        self,
        headers: dict[str, str],
        body: bytes,
        secret: str | None,
        previous: str | None,
        bearer_token: str | None,
        tolerance: float,
        now: float,
        sent_body: bytes | None,
    ) -> None:
        self.headers = headers
        self.body = body
        self.secret = secret
        self.previous = previous
        self.bearer_token = bearer_token
        self.tolerance = tolerance
        self.now = now
        self.sent_body = sent_body
        self.findings: list[Finding] = []
        self.verified = True

    def add(self, code: str, severity: str, message: str) -> None:
        self.findings.append(Finding(code, severity, message))
        if severity == PROBLEM:
            self.verified = False

    def run(self) -> Diagnosis:
        if not self.secret and not self.previous and not self.bearer_token:
            self.add("NO_CREDENTIAL", PROBLEM, "give the signing secret and/or the bearer token")
        self.check_credentials_kinds()
        if self.secret or self.previous:
            self.check_signature()
        if self.bearer_token:
            self.check_bearer()
        self.check_body_shape()
        return Diagnosis(self.verified, self.findings)

    # --- credentials ------------------------------------------------------------------------

    def check_credentials_kinds(self) -> None:
        for label, value in (("secret", self.secret), ("previous secret", self.previous)):
            if not value:
                continue
            if value.startswith(sig.BEARER_PREFIX):
                self.add(
                    "CREDENTIAL_MIXUP",
                    PROBLEM,
                    f"the {label} {sig.mask(value)} is a bearer token (whbt_…), not the signing "
                    "secret (whsec_…): both are on the dashboard's Webhook page",
                )
            elif value.startswith(sig.API_KEY_PREFIX):
                self.add(
                    "CREDENTIAL_MIXUP",
                    PROBLEM,
                    f"the {label} {sig.mask(value)} is an API key (disp_…), not the signing "
                    "secret (whsec_…)",
                )
        if self.bearer_token and self.bearer_token.startswith(sig.SECRET_PREFIX):
            self.add(
                "CREDENTIAL_MIXUP",
                PROBLEM,
                f"the bearer token {sig.mask(self.bearer_token)} is a signing secret (whsec_…): "
                "deliveries never carry the secret; the bearer token starts with whbt_",
            )

    def signer(self, secret: str | None, label: str) -> Any:
        if not secret:
            return None
        try:
            return sig.key_of(secret)
        except ValueError as exc:
            self.add("INVALID_SECRET", PROBLEM, f"the {label} {sig.mask(secret)}: {exc}")
            return None

    # --- Standard Webhooks signature -------------------------------------------------------

    def check_signature(self) -> None:
        missing = [n for n in sig.SIGNING_HEADERS if not self.headers.get(n, "").strip()]
        if missing:
            present = sorted(h for h in self.headers if h.startswith("webhook"))
            seen = f" (webhook headers present: {', '.join(present)})" if present else ""
            self.add(
                "MISSING_HEADER",
                PROBLEM,
                f"missing {', '.join(missing)}{seen}: a proxy or the framework dropped them, or "
                "this is not the request Dispatched sent",
            )
            return
        msg_id = self.headers[sig.HEADER_ID].strip()
        timestamp = sig.parse_timestamp(self.headers[sig.HEADER_TIMESTAMP])
        if timestamp is None:
            self.add(
                "MALFORMED_TIMESTAMP",
                PROBLEM,
                f"{sig.HEADER_TIMESTAMP} is not Unix seconds: "
                f"{self.headers[sig.HEADER_TIMESTAMP]!r}",
            )
            return
        self.check_timestamp(timestamp)
        digests, malformed = sig.parse_signatures(self.headers[sig.HEADER_SIGNATURE])
        if malformed:
            self.add(
                "MALFORMED_SIGNATURE",
                NOTE if digests else PROBLEM,
                f"{sig.HEADER_SIGNATURE} entries that are not v1,<base64>: {malformed!r}",
            )
        if not digests:
            if not malformed:
                self.add("MALFORMED_SIGNATURE", PROBLEM, f"{sig.HEADER_SIGNATURE} has no v1 entry")
            return
        current = self.signer(self.secret, "secret")
        previous = self.signer(self.previous, "previous secret")

        def match(signer: Any, body: bytes) -> int | None:
            if signer is None:
                return None
            expected = sig.sign(signer, msg_id, timestamp, body)
            if expected is None:
                return None
            for index, digest in enumerate(digests):
                if hmac.compare_digest(expected, digest):
                    return index
            return None

        count = len(digests)
        where = f"of {count} signature{'s' if count > 1 else ''}"
        at = match(current, self.body)
        if at is not None:
            rotation = " (two signatures: a secret rotation's grace period)" if count > 1 else ""
            self.add(
                "SIGNATURE_OK", OK, f"signature #{at + 1} {where} matches the secret{rotation}"
            )
            return
        if self.secret is None:
            self.verified = False  # only the previous secret was given: the receiver's is unknown
        at = match(previous, self.body)
        if at is not None:
            self.add_rotation(at, where)
            return
        # The signature does not match the body as received: find the bytes that were signed.
        for candidate, reencoded in self.candidates():
            for signer, is_previous in ((current, False), (previous, True)):
                at = match(signer, candidate)
                if at is None:
                    continue
                self.add_body_changed(candidate, reencoded)
                if is_previous:
                    self.add_rotation(at, where)
                else:
                    self.add(
                        "SIGNATURE_OK",
                        NOTE,
                        f"signature #{at + 1} {where} matches the "
                        "secret over the bytes that were sent",
                    )
                return
        if current is None and previous is None:
            return  # the secrets themselves were reported unusable
        self.add_unexplained()

    def check_timestamp(self, timestamp: int) -> None:
        skew = self.now - timestamp
        if abs(skew) <= self.tolerance:
            self.add(
                "TIMESTAMP_OK", OK, f"timestamp {_ago(skew)} (tolerance {self.tolerance:.0f} s)"
            )
            return
        self.add(
            "TIMESTAMP_SKEW",
            PROBLEM,
            f"timestamp {_ago(skew)}: {abs(skew) - self.tolerance:.0f} s beyond the tolerance of "
            f"{self.tolerance:.0f} s. "
            + (
                "The receiver's clock is behind, or the request was queued or replayed (a "
                "delivery captured earlier: pass the time it arrived as now)"
                if skew > 0
                else "The receiver's clock is behind the sender's: sync it (NTP)"
            ),
        )

    def add_rotation(self, at: int, where: str) -> None:
        if self.secret:
            self.add(
                "WRONG_SECRET",
                PROBLEM,
                f"no signature matches the secret {sig.mask(self.secret)}, but signature "
                f"#{at + 1} {where} matches the previous secret {sig.mask(self.previous or '')}: "
                "a rotation. Deliveries carry both signatures for 24 h after a rotation, then "
                "only the current secret's: verify with the current secret (or accept both "
                "while you switch)",
            )
        else:
            self.add(
                "SIGNATURE_OK",
                NOTE,
                f"signature #{at + 1} {where} matches the previous secret "
                f"{sig.mask(self.previous or '')}",
            )

    def candidates(self) -> list[tuple[bytes, bool]]:
        """Bodies that may be what was signed: the known sent bytes, else re-encodings."""
        if self.sent_body is not None:
            return [(self.sent_body, _same_json(self.body, self.sent_body))]
        found: list[tuple[bytes, bool]] = []
        try:
            document = json.loads(self.body)
        except ValueError:
            document = None
        if document is not None:
            for variant in (document, sig.reorder_delivery(document)):
                found.append((sig.encode_like_dispatched(variant), True))
        for variant in (self.body.strip(), self.body.replace(b"\r\n", b"\n")):
            found.append((variant, False))
        unique: list[tuple[bytes, bool]] = []
        for candidate, reencoded in found:
            if candidate != self.body and all(candidate != c for c, _ in unique):
                unique.append((candidate, reencoded))
        return unique

    def add_body_changed(self, sent: bytes, reencoded: bool) -> None:
        offset = _first_difference(self.body, sent)
        detail = (
            f"first difference at byte {offset}: received {_excerpt(self.body, offset)}, "
            f"sent {_excerpt(sent, offset)} ({len(self.body)} bytes received, {len(sent)} sent)"
        )
        if reencoded:
            why = (
                "It is the same JSON encoded differently: the framework parsed the body and "
                "encoded it again (e.g. json.dumps(request.json))"
            )
        else:
            why = "It is not the same JSON: the body was altered or truncated on the way"
        self.add(
            "BODY_CHANGED",
            PROBLEM,
            f"the body is not the bytes that were signed; {detail}. {why}; {RAW_BODY_HINT}",
        )

    def add_unexplained(self) -> None:
        label = sig.mask(self.secret or self.previous or "")
        if self.sent_body is not None and self.sent_body == self.body:
            self.add(
                "WRONG_SECRET",
                PROBLEM,
                f"the body is exactly what was sent, but no signature matches the secret {label}: "
                "the receiver verifies with another secret (compare it with the dashboard's "
                "Webhook page; after 24 h a rotated-out secret stops verifying)",
            )
            return
        if self.sent_body is not None:
            self.add_body_changed(self.sent_body, _same_json(self.body, self.sent_body))
            self.add(
                "WRONG_SECRET",
                PROBLEM,
                f"and no signature matches the secret {label} over the bytes that were sent either",
            )
            return
        try:
            untouched = sig.encode_like_dispatched(json.loads(self.body)) == self.body
        except ValueError:
            untouched = False
        if untouched:
            self.add(
                "WRONG_SECRET",
                PROBLEM,
                f"no signature matches the secret {label}, and the body is encoded exactly as "
                "Dispatched encodes it, so the secret is most likely wrong (compare it with the "
                "dashboard's Webhook page; after 24 h a rotated-out secret stops verifying)",
            )
        else:
            self.add(
                "NO_MATCHING_SIGNATURE",
                PROBLEM,
                f"no signature matches the secret {label}, and no re-encoding of the body "
                "explains it: either the secret is wrong or the body was changed on the way; "
                f"{RAW_BODY_HINT}",
            )

    # --- bearer token ------------------------------------------------------------------------

    def check_bearer(self) -> None:
        token = self.bearer_token or ""
        authorization = self.headers.get("authorization", "").strip()
        if not authorization:
            self.add(
                "BEARER_MISSING",
                PROBLEM,
                "no Authorization header: the project's 'send bearer token' switch is off, or "
                "a proxy dropped it",
            )
            return
        scheme, _, got = authorization.partition(" ")
        got = got.strip()
        if scheme.lower() != "bearer":
            self.add(
                "BEARER_MISMATCH",
                PROBLEM,
                f"Authorization is not a Bearer header (scheme {scheme!r})",
            )
        elif hmac.compare_digest(got.encode(), token.encode()):
            self.add("BEARER_OK", OK, "Authorization: Bearer matches the bearer token")
        else:
            self.add(
                "BEARER_MISMATCH",
                PROBLEM,
                f"Authorization carries {sig.mask(got)}, not the bearer token {sig.mask(token)}: "
                "the token was rotated (that takes effect at once, with no overlap) or the "
                "receiver has another project's token",
            )

    # --- body --------------------------------------------------------------------------------

    def check_body_shape(self) -> None:
        try:
            document = json.loads(self.body)
        except ValueError:
            self.add("BODY_NOT_JSON", NOTE, "the body is not JSON (truncated or not a delivery)")
            return
        msg_id = self.headers.get(sig.HEADER_ID, "").strip()
        job_id = document.get("jobId") if isinstance(document, dict) else None
        if (
            msg_id
            and isinstance(job_id, str)
            and not (msg_id == job_id or msg_id.startswith(f"{job_id}:"))
        ):
            self.add(
                "ID_MISMATCH",
                PROBLEM,
                f"{sig.HEADER_ID} is {msg_id!r} but the body's jobId is {job_id!r}: the headers "
                "and the body come from different requests",
            )


def _ago(skew: float) -> str:
    return f"{skew:.0f} s in the past" if skew >= 0 else f"{-skew:.0f} s in the future"


def _first_difference(a: bytes, b: bytes) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def _excerpt(data: bytes, offset: int, width: int = 12) -> str:
    start = max(0, offset - width)
    piece = data[start : offset + width]
    prefix = "…" if start else ""
    suffix = "…" if offset + width < len(data) else ""
    return f"{prefix}{piece!r}{suffix}" if piece else "(end of body)"


def _same_json(a: bytes, b: bytes) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


__all__: Sequence[str] = ("Diagnosis", "Finding", "diagnose", "parse_header_block")
