"""The model hub, reached through huggingface_hub, and the local cache the pulled files are kept in.

huggingface_hub reads HF_ENDPOINT, HF_TOKEN (or a stored login) and HF_HOME / HF_HUB_CACHE itself; a `Hub` left at
its defaults follows them, and its fields override them (tests point `endpoint` at a hub on loopback). Errors of
huggingface_hub and of its HTTP client become this service's errors here, in `hub_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sop_llm.infra.errors import (
    DownloadError,
    ForbiddenError,
    HubRepoNotFoundError,
    ServiceUnavailableError,
)
from sop_llm.services.models.choice import HubFile


@dataclass(frozen=True, slots=True)
class Hub:
    """Where models come from and where they are kept. `endpoint`: the hub's address (None: HF_ENDPOINT, else
    huggingface.co); `token`: the access token (None: HF_TOKEN or the stored login); `cache_dir`: the
    huggingface_hub cache folder (None: HF_HUB_CACHE, else HF_HOME/hub)."""

    endpoint: str | None = None
    token: str | None = None
    cache_dir: Path | None = None

    @property
    def address(self) -> str:
        from huggingface_hub import constants

        return (self.endpoint or constants.ENDPOINT).rstrip("/")

    def cache(self) -> Path:
        from huggingface_hub import constants

        return Path(self.cache_dir or constants.HF_HUB_CACHE).expanduser().resolve()

    def repo_folder(self, repo: str) -> Path:
        """The cache's folder of a model repository (huggingface_hub's layout: blobs/, refs/, snapshots/)."""
        return self.cache() / f"models--{repo.replace('/', '--')}"

    def snapshot(self, repo: str, revision: str) -> Path:
        """The folder that holds a revision's files (links to blobs/), as the repository lays them out."""
        return self.repo_folder(repo) / "snapshots" / revision


@dataclass(frozen=True, slots=True)
class Listing:
    """A repository at one commit (`revision`) and its files."""

    repo: str
    revision: str
    files: tuple[HubFile, ...]


def list_repository(hub: Hub, repo: str) -> Listing:
    """The files of `repo` at its newest commit, with their sizes and checksums (blocking)."""
    from huggingface_hub import HfApi

    with hub_errors(hub, repo):
        info = HfApi(endpoint=hub.endpoint, token=hub.token).model_info(repo, files_metadata=True)
    if not info.sha:
        raise DownloadError(f"{hub.address} gave no commit for {repo}; is HF_ENDPOINT a model hub?")
    files = tuple(
        HubFile(
            path=sibling.rfilename,
            size=sibling.lfs.size if sibling.lfs else (sibling.size or 0),
            sha256=sibling.lfs.sha256 if sibling.lfs else None,
            blob_id=sibling.blob_id,
        )
        for sibling in info.siblings or []
    )
    return Listing(repo=repo, revision=info.sha, files=files)


@contextmanager
def hub_errors(hub: Hub, repo: str) -> Iterator[None]:
    """Turn what huggingface_hub and its HTTP client raise into this service's errors."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise ServiceUnavailableError(
            "HF_HUB_OFFLINE is set: pulling a model needs the hub; unset it (or set it to 0) to pull"
        ) from exc
    except GatedRepoError as exc:
        raise ForbiddenError(
            f"{repo} is gated on {hub.address}: accept its conditions there and set HF_TOKEN to a token of that account"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise HubRepoNotFoundError(
            f"{hub.address} has no model repository '{repo}' (or it is private: set HF_TOKEN)",
            details={"repo": repo},
        ) from exc
    except RemoteEntryNotFoundError as exc:
        raise DownloadError(f"{repo}: {hub.address} lists a file it does not serve ({exc.response.url})") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(
            f"{hub.address} answered {exc.response.status_code} for {repo}: {str(exc).splitlines()[0]}"
        ) from exc
    except (httpx2.TransportError, OSError) as exc:
        raise DownloadError(f"fetching {repo} from {hub.address} failed: {exc or type(exc).__name__}") from exc
