"""The ``gcp-logging`` observer: makes every log line of the process a Cloud Logging entry.

Observers are built once when the engine starts, before any provider or call. This one
installs its formatter then (no hook needed): the console handler that ``vc serve`` set up
is replaced by one writing :class:`~vc_gcp.formatter.CloudLoggingFormatter` JSON to stdout.
Other handlers (files, pytest's capture) are left alone. Its ``call_started``/``call_ended``
keep the call directory the formatter labels lines from.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any, Literal

import attrs

from vc.call import CallInfo
from vc.providers import Observer
from vc.settings import setting
from vc_gcp import environment
from vc_gcp.calls import CallDirectory, CallLabels
from vc_gcp.formatter import CloudLoggingFormatter
from vc_gcp.trace import current_trace, from_params

log = logging.getLogger("vc.gcp")
HANDLER_NAME = "vc-gcp-logging"


def _labels(_: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        key, sep, _v = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{attribute.name}: expected key=value pairs, got {item!r}")


def parse_labels(items: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (i.partition("=") for i in items)}


@attrs.define
class CloudLoggingSettings:
    mode: Literal["auto", "always", "off"] = setting(
        "auto",
        help="auto: on when running on Cloud Run (K_SERVICE) or Kubernetes "
        "(KUBERNETES_SERVICE_HOST); always; off",
    )
    stream: Literal["stdout", "stderr"] = setting("stdout", help="where the JSON lines go")
    project: str = setting(
        "",
        help="Google Cloud project id for trace links (default: $GOOGLE_CLOUD_PROJECT, "
        "else the metadata server)",
    )
    metadata_lookup: bool = setting(
        True, help="ask the metadata server for the project id when it is not configured"
    )
    source_location: bool = setting(
        True, help="add logging.googleapis.com/sourceLocation (file, line, function)"
    )
    labels: list[str] = setting(
        factory=list,
        help="extra labels on every line, key=value, comma separated (e.g. env=prod)",
        validator=_labels,
    )
    service: str = setting(
        "", help="service name Error Reporting groups errors under (default: $K_SERVICE, else vc)"
    )
    max_message_chars: int = setting(
        100_000, min=100, max=10_000_000,
        help="longer messages are cut (a Cloud Logging entry is limited to 256 KiB)",
        validator=attrs.validators.ge(1000),
    )


class CloudLoggingObserver(Observer):
    """Cloud Logging structured JSON on stdout, with call labels and trace links."""

    name = "gcp-logging"
    Settings = CloudLoggingSettings

    def __init__(
        self,
        settings: CloudLoggingSettings | None = None,
        *,
        env: Mapping[str, str] | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        super().__init__(settings or CloudLoggingSettings())
        s: CloudLoggingSettings = self.settings
        self.env = dict(os.environ if env is None else env)
        self.calls = CallDirectory()
        from vc import __version__

        self.formatter = CloudLoggingFormatter(
            project=s.project or environment.project_from_env(self.env),
            calls=self.calls,
            labels=parse_labels(s.labels),
            source_location=s.source_location,
            service=s.service or self.env.get("K_SERVICE", "") or "vc",
            version=self.env.get("K_REVISION", "") or __version__,
            max_message_chars=s.max_message_chars,
        )
        self.handler: logging.Handler | None = None
        self._removed: list[logging.Handler] = []
        self.lookup: threading.Thread | None = None
        if self.wanted():
            self.install(stream)

    def wanted(self) -> bool:
        mode = self.settings.mode
        return mode == "always" or (mode == "auto" and bool(environment.platform(self.env)))

    # -- the handler ------------------------------------------------------------------------

    def install(self, stream: IO[str] | None = None) -> logging.Handler:
        """Route the root logger's console output through the Cloud Logging formatter."""
        root = logging.getLogger()
        out = stream or (sys.stdout if self.settings.stream == "stdout" else sys.stderr)
        handler = logging.StreamHandler(out)
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(self.formatter)
        self._removed = [h for h in root.handlers if _is_console(h)]
        for h in self._removed:
            root.removeHandler(h)
        root.addHandler(handler)
        self.handler = handler
        self._find_project()
        return handler

    def uninstall(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        root = logging.getLogger()
        if self.handler is not None:
            root.removeHandler(self.handler)
            self.handler = None
        for h in self._removed:
            if h not in root.handlers:
                root.addHandler(h)
        self._removed = []

    def _find_project(self) -> None:
        if self.formatter.project or not self.settings.metadata_lookup:
            return
        if not (environment.platform(self.env) or self.env.get("GCE_METADATA_HOST")):
            log.info("Cloud Logging format on; no Google Cloud project known, traces are not linked")
            return

        def lookup() -> None:
            project = environment.project_from_metadata(self.env)
            if project:
                self.formatter.project = project
                log.info("Cloud Logging format on; traces link to project %s", project)
            else:
                log.warning(
                    "the metadata server did not say which project this is: trace ids are "
                    "logged but not linked (set [observer.gcp-logging] project)"
                )

        # Never delay startup for it: lines logged before the answer carry trace_id only.
        self.lookup = threading.Thread(target=lookup, name="vc-gcp-project", daemon=True)
        self.lookup.start()

    # -- Observer ---------------------------------------------------------------------------

    def call_started(self, info: CallInfo, profile: str) -> None:
        trace = from_params(info.params) or current_trace.get()
        self.calls.started(info.call_id, CallLabels(info.transport, profile, trace))

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self.calls.ended(info.call_id)


def _is_console(handler: logging.Handler) -> bool:
    """A plain stream handler on stdout/stderr (what ``vc serve`` installs), or ours."""
    if handler.get_name() == HANDLER_NAME:
        return True
    if type(handler) is not logging.StreamHandler:
        return False
    stream = getattr(handler, "stream", None)
    return stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
