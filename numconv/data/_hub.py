"""Loading image datasets from the Hugging Face hub, failing fast when the hub cannot be reached.

`datasets` retries an unreachable hub for about 25 s before giving up. Instead, unless offline mode
is asked for, we first try one TCP connection to the hub's host (HUB_PROBE_TIMEOUT_S); when that
fails, or offline mode is on, `datasets` runs in offline mode, which loads a cached copy or fails at
once, and a failure becomes `HubUnavailable`.

The offline switches and cache directories are read from the environment at call time (not when
`datasets` was imported), so HF_HUB_OFFLINE, HF_HOME and HF_DATASETS_CACHE set by a caller apply.
"""
import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_PARQUET_EXPORT = "refs/convert/parquet"


@dataclass(frozen=True)
class HubSpec:
    repo: str
    config: Optional[str] = None
    mode: Optional[str] = None          # convert every image to this Pillow mode ('RGB', 'L')
    image_size: Optional[int] = None    # resize every image (shorter side, centre crop) to this


class HubUnavailable(ConnectionError):
    """The dataset `name` could not be loaded from the Hugging Face hub and is not cached.

    `cause` is 'offline' (offline mode was on: hub_offline=True or HF_HUB_OFFLINE), 'unreachable'
    (no connection to the hub, or the connection failed while loading); `reason` says what
    happened, in words."""

    def __init__(self, name, reason, cause="unreachable"):
        self.name = name
        self.reason = reason
        self.cause = cause
        super().__init__(f"cannot load {name!r} from the Hugging Face hub: {reason}")


def env_offline():
    """Whether the environment asks for Hugging Face offline mode, read now."""
    return any(os.environ.get(k, "").upper() in _TRUE
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def datasets_cache_dir():
    """The `datasets` cache directory as the environment gives it now (HF_DATASETS_CACHE, else
    $HF_HOME/datasets, else ~/.cache/huggingface/datasets)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.path.expanduser(os.environ["HF_DATASETS_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "datasets")


def hub_reachable(timeout=HUB_PROBE_TIMEOUT_S):
    """(True, '') when a TCP connection to the hub (or the HTTPS proxy) opens within `timeout`
    seconds, else (False, why). Name resolution runs in a thread so that it is bounded too."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = _proxy_for(host, endpoint.scheme)
    if proxy is not None:
        host, port = proxy
    result = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return True, ""
    what = f"{host}:{port}" + (" (the proxy)" if proxy else "")
    if "error" in result:
        return False, f"cannot connect to {what}: {result['error']}"
    return False, f"no answer from {what} within {timeout:g} s"


def _proxy_for(host, scheme):
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if any(host.endswith(d.strip().lstrip(".")) for d in no_proxy.split(",") if d.strip()):
        return None
    names = ("HTTPS_PROXY", "https_proxy") if scheme != "http" else ("HTTP_PROXY", "http_proxy")
    for name in names + ("ALL_PROXY", "all_proxy"):
        value = os.environ.get(name)
        if value:
            url = urlparse(value if "://" in value else "http://" + value)
            if url.hostname:
                return url.hostname, url.port or (443 if url.scheme == "https" else 80)
    return None


@contextlib.contextmanager
def _hub_mode(offline):
    """Switch `datasets` and `huggingface_hub` to (or out of) offline mode for the block, and keep
    their progress bars and retry warnings off the terminal (nothing below the CLI prints)."""
    import datasets
    import huggingface_hub.constants as hub_constants
    from datasets.utils import logging as ds_logging
    from huggingface_hub.utils import logging as hub_logging

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             hub_constants.HF_HUB_OFFLINE)
    bars = ds_logging.is_progress_bar_enabled()
    levels = ds_logging.get_verbosity(), hub_logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = offline
    hub_constants.HF_HUB_OFFLINE = offline
    ds_logging.disable_progress_bar()
    # failures come back as exceptions; their log records would only repeat them on stderr
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    hub_logging.set_verbosity(hub_logging.CRITICAL)
    try:
        yield
    finally:
        (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
         hub_constants.HF_HUB_OFFLINE) = saved
        if bars:
            ds_logging.enable_progress_bar()
        ds_logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])


def local_mode():
    """For reading local files with `datasets`: offline (no hub look-ups) and quiet."""
    return _hub_mode(True)


def _network_errors():
    errors = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
        errors += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:
        pass
    try:
        import httpx
        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def load_hub_dataset(name, spec, *, streaming=False, hub_offline=None):
    """`datasets.load_dataset(spec.repo, spec.config)`: a DatasetDict, or an IterableDatasetDict when
    streaming. Raises HubUnavailable when the hub cannot be reached and nothing is cached, and
    ValueError when the hub answers that the dataset does not exist."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    if hub_offline is None:
        offline = env_offline()
        reason = "offline mode is on (HF_HUB_OFFLINE is set)"
        if not offline:
            ok, why = hub_reachable()
            if not ok:
                offline, reason = True, f"the hub is unreachable ({why})"
        cause = "offline" if reason.startswith("offline") else "unreachable"
    else:
        offline = bool(hub_offline)
        reason = "offline mode is on (hub_offline=True)"
        cause = "offline"
    cache_dir = datasets_cache_dir()
    # Streaming reads from the network only; offline, the cached (downloaded) copy is the one to use.
    streaming = bool(streaming) and not offline

    def load(revision=None):
        return datasets.load_dataset(spec.repo, spec.config, cache_dir=cache_dir,
                                     streaming=streaming, revision=revision)

    with _hub_mode(offline):
        try:
            try:
                return load()
            except RuntimeError as e:
                if "scripts are no longer supported" not in str(e):
                    raise
                # A repository still built by a loading script: read the hub's Parquet export.
                return load(_PARQUET_EXPORT)
        except (DatasetNotFoundError, FileNotFoundError) + _network_errors() as e:
            if offline:  # whatever went wrong, the cache did not have it
                raise HubUnavailable(name, f"{reason}, and {spec.repo} is not in the cache "
                                           f"{cache_dir}", cause=cause) from e
            if isinstance(e, DatasetNotFoundError):
                raise ValueError(f"the hub has no dataset {spec.repo!r} ({e}); check the name at "
                                 f"https://huggingface.co/datasets/{spec.repo}") from None
            if isinstance(e, FileNotFoundError):
                raise
            raise HubUnavailable(name, f"the hub could not be reached for {spec.repo} "
                                       f"({type(e).__name__}: {e})", cause="unreachable") from e
