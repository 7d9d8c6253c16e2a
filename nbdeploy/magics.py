"""``%deploy``, ``%deployments``, ``%undeploy``, ``%promote``, ``%monitor``, ``%score``: thin parsing over the API.

User errors (nbdeploy's own exceptions, unknown variables) surface as IPython ``UsageError``:
one clear line, no traceback, and still a failed cell, so papermill stops on them.
"""

from __future__ import annotations

import difflib
import json
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from . import _api, errors
from .errors import NbdeployError


def _redact_item(item: str) -> tuple[str, str]:
    """``email`` (dropped) or ``email:hash``."""
    column, _, mode = item.strip().partition(":")
    return column.strip(), (mode.strip() or "drop")


def _target_option(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--option``: the value as JSON if it parses (``hpa=false``, ``timeout=60``), else text."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--option {item!r} is not KEY=VALUE")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except ValueError:
        return key.strip().replace("-", "_"), value


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _user_error(exc: NbdeployError) -> UsageError:
    """One line IPython shows without a traceback; the kind of error is named unless it is a plain usage error."""
    kind = "" if isinstance(exc, errors.UsageError) else f"{type(exc).__name__}: "
    return UsageError(f"{kind}{exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""))


@magics_class
class DeployMagics(Magics):
    def _lookup(self, name: str, what: str) -> Any:
        """The notebook variable ``name``; ``what`` is the argument it came from (``model``, ``--sample``)."""
        if not name.isidentifier():
            raise UsageError(
                f"{what} takes a variable name, not an expression: {name!r}\n"
                f"hint: assign it first (x = {name}) and pass x"
            )
        ns = self.shell.user_ns if self.shell is not None else {}
        if name not in ns:
            raise UsageError(f"{what} '{name}' is not defined in this notebook (run the cell that creates it first)")
        return ns[name]

    def _parse(self, magic: Any, line: str) -> Any:
        """Arguments split as a shell does (``--name 'wine v2'`` gives ``wine v2``, without quotes); an unknown
        option is named, with the closest known one."""
        parser = magic.parser
        try:
            argv = shlex.split(line)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"could not parse '{line}': {exc}") from None
        known = [s for action in parser._actions for s in action.option_strings]
        for token in argv:
            option = token.split("=", 1)[0]
            attached = option[:2] in known and not option.startswith("--")  # -nwine is -n wine
            if option.startswith("-") and option not in known and not attached and not _is_number(option):
                close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
                raise UsageError(
                    f"unknown option {option} for %{magic.__name__}"
                    + (f": did you mean {close[0]}?" if close else f"; see %{magic.__name__}?")
                )
        try:
            return parser.parse_args(argv)
        except UsageError:
            raise
        except SystemExit as exc:  # argparse on bad input
            raise UsageError(f"could not parse '{line}': see %{magic.__name__}?") from exc

    @magic_arguments()
    @argument("model", help="variable holding the fitted model, pipeline or function")
    @argument("--name", "-n", required=True, help="deployment name (lowercase letters, digits, '-')")
    @argument("--sample", "-s", required=True, help="variable holding sample input (e.g. X_train)")
    @argument("--target", "-t", default="local", help="where to run it: local (default), container, kubernetes, edge")
    @argument("--engine", default=None, help="for --target container/kubernetes: container engine (podman, docker)")
    @argument("--base-image", default=None, help="for --target container/kubernetes: base image (default: nbdeploy's)")
    @argument("--registry", default=None, help="for --target kubernetes: where the cluster pulls the image from")
    @argument("--replicas", type=int, default=None, help="for --target kubernetes: replicas (the HPA's minimum)")
    @argument("--context", default=None, help="for --target kubernetes: kube context (default: the current one)")
    @argument("--namespace", default=None, help="for --target kubernetes: namespace (default: the context's)")
    @argument("--port", "-p", type=int, default=None, help="port for the local target (default: a free one)")
    @argument("--requirements", "-r", default=None, help="extra pins, comma-separated (e.g. 'xgboost==2.1.0')")
    @argument("--redact", default=None, help="columns kept out of the request log: 'email,phone' or 'email:hash'")
    @argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="another option of the target (repeatable; VALUE is read as JSON if it parses, e.g. hpa=false)",
    )  # fmt: skip
    @argument("--force", action="store_true", help="make a new version even if the model and options are unchanged")
    @argument(
        "--shadow", nargs="?", type=float, const=100.0, default=None, metavar="PCT",
        help="start as a shadow of the live version: a copy of PCT percent of requests (default 100), answers nobody",
    )  # fmt: skip
    @argument(
        "--split", type=float, default=None, metavar="PCT", help="start as a candidate answering PCT percent of callers"
    )
    @argument("--sticky", default=None, help="keep each caller on one version: 'key' or 'header:NAME'")
    @argument("--no-compile", action="store_true", help="serve the Python object, without trying the compiled path")
    @line_magic
    def deploy(self, line: str) -> Any:
        """Deploy a model from this notebook: ``dep = %deploy model --name churn --sample X_train``

        Returns the handle (its card shows when the line ends the cell); assign it to keep it."""
        args = self._parse(self.deploy, line)
        model = self._lookup(args.model, "the model")
        sample = self._lookup(args.sample, "--sample")
        reqs = [r.strip() for r in args.requirements.split(",") if r.strip()] if args.requirements else None
        redact = dict(_redact_item(r) for r in args.redact.split(",") if r.strip()) if args.redact else None
        extra = dict(_target_option(o) for o in args.option) or None
        roles: dict[str, Any] = {"split": args.split, "sticky": args.sticky}
        if args.shadow is not None:
            roles["shadow"] = args.shadow
        if args.no_compile:
            roles["compile"] = False
        try:
            options = {"engine": args.engine, "base_image": args.base_image, "registry": args.registry}
            options.update(replicas=args.replicas, context=args.context, namespace=args.namespace)
            return _api.deploy(
                model, name=args.name, sample=sample, target=args.target, port=args.port, requirements=reqs,
                redact=redact, target_options=extra, force=args.force,
                **{k: v for k, v in {**options, **roles}.items() if v is not None},
            )  # fmt: skip
        except NbdeployError as exc:
            raise _user_error(exc) from None

    @magic_arguments()
    @argument("--all", "-a", action="store_true", help="list every version, not only the current one")
    @line_magic
    def deployments(self, line: str) -> Any:
        """List deployments: status checked now (with the fix for a failed one), age, requests and error rate."""
        args = self._parse(self.deployments, line)
        from .views import rows
        from .views_frame import deployments_frame  # a DataFrame shown as the compact table

        return deployments_frame(rows(all_versions=args.all))

    @line_magic
    def undeploy(self, line: str) -> None:
        """Stop a deployment: %undeploy NAME"""
        names = shlex.split(line)
        if not names:
            raise UsageError("usage: %undeploy NAME [NAME ...]")
        for name in names:
            try:
                dep = _api.get(name)
                dep.stop()
            except NbdeployError as exc:
                raise _user_error(exc) from None
            display(dep)

    @magic_arguments()
    @argument("name", help="deployment name")
    @argument("--force", action="store_true", help="promote without checking the rules (audited as forced)")
    @argument("--watch", type=float, default=300.0, help="seconds the previous version stays warm (default: 300)")
    @line_magic
    def promote(self, line: str) -> Any:
        """Make a name's candidate (a --shadow or --split deploy) the live version: %promote NAME [--force]

        Refused (one line naming the failed rules) when the candidate breaks the promotion rules."""
        args = self._parse(self.promote, line)
        if args.watch < 0:
            raise UsageError(f"--watch must be a number of seconds >= 0, not {args.watch:g}")
        try:
            return _api.promote(args.name, watch_s=args.watch, force=args.force)
        except NbdeployError as exc:
            raise _user_error(exc) from None

    @magic_arguments()
    @argument("name", help="deployment name")
    @argument("--interval", "-i", type=float, default=3.0, help="seconds between updates (default: 3)")
    @argument("--static", action="store_true", help="a static HTML snapshot instead of the live panel")
    @line_magic
    def compare(self, line: str) -> Any:
        """Champion against challenger, live: %compare NAME (the live version against its shadow or split)"""
        args = self._parse(self.compare, line)
        if args.interval <= 0:
            raise UsageError(f"--interval must be a positive number of seconds, not {args.interval:g}")
        try:
            return _api.get(args.name).compare_panel(interval=args.interval, live=not args.static)
        except NbdeployError as exc:
            raise _user_error(exc) from None

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="deployment name (none: every deployment as a tile)")
    @argument("--version", "-v", type=int, default=None, help="a version other than the running one")
    @argument("--interval", "-i", type=float, default=3.0, help="seconds between updates (default: 3)")
    @argument("--static", action="store_true", help="a static HTML snapshot instead of the live panel")
    @line_magic
    def monitor(self, line: str) -> Any:
        """Open a deployment's live monitoring panel: %monitor NAME; %monitor alone shows the fleet"""
        args = self._parse(self.monitor, line)
        if args.interval <= 0:
            raise UsageError(f"--interval must be a positive number of seconds, not {args.interval:g}")
        if args.name is None:
            from .monitor.fleet import Fleet

            return Fleet(interval=args.interval)
        try:
            return _api.get(args.name, args.version).monitor(interval=args.interval, live=not args.static)
        except NbdeployError as exc:
            raise _user_error(exc) from None

    @magic_arguments()
    @argument("name", help="deployment name")
    @argument("source", nargs="?", default=None, help="a DataFrame variable, or a .parquet/.csv path")
    @argument("--key", "-k", required=True, help="the column that identifies each row (the checkpoint's key)")
    @argument("--into", "-i", default=None, help="a .parquet/.csv file, an SQLite .db or a database URL")
    @argument("--into-table", default=None, help="table to write (default: 'predictions')")
    @argument("--into-con", default=None, help="database of --into-table (default: --con)")
    @argument("--sql", default=None, help="a query to score (with --con); quote it: --sql 'SELECT …'")
    @argument("--table", default=None, help="a table to score (with --con)")
    @argument("--con", default=None, help="the source's database: a SQLAlchemy URL or an SQLite file")
    @argument("--quarantine", default=None, help="where refused rows go (a table, or a .csv/.parquet file)")
    @argument("--method", default="predict", help="predict (default), predict_proba or decision_function")
    @argument("--chunk-rows", type=int, default=20_000, help="rows per request (default: 20000)")
    @argument("--in-flight", type=int, default=4, help="requests at once (default: 4)")
    @argument("--version", "-v", type=int, default=None, help="a version other than the running one")
    @argument("--overwrite", action="store_true", help="start again instead of resuming")
    @line_magic
    def score(self, line: str) -> Any:
        """Batch scoring with a progress bar: ``%score churn customers.parquet --into scores.parquet --key id``

        SOURCE is a DataFrame variable of the notebook or a file path; ``--sql``/``--table`` with ``--con`` read a
        database. Returns the summary (a card); run the same line again to resume an interrupted job."""
        args = self._parse(self.score, line)
        source: Any = args.source
        ns = self.shell.user_ns if self.shell is not None else {}
        if source is not None and source.isidentifier() and source in ns:
            source = ns[source]  # a DataFrame of the notebook (a name that is no variable is a path)
        try:
            from .batch import score

            return score(
                args.name, source, into=args.into, key=args.key, sql=args.sql, table=args.table, con=args.con,
                into_table=args.into_table, into_con=args.into_con, quarantine=args.quarantine,
                method=args.method, chunk_rows=args.chunk_rows, in_flight=args.in_flight,
                overwrite=args.overwrite, version=args.version,
            )  # fmt: skip
        except NbdeployError as exc:
            raise _user_error(exc) from None


def register(ipython: Any) -> None:
    from . import _ipython

    ipython.register_magics(DeployMagics)
    _ipython.install(ipython)  # nbdeploy's errors in one line, as the magics' own
