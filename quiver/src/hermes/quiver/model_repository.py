"""``ModelRepository``: a Triton model repository on local disk or any fsspec store."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hermes.quiver.config import ModelConfig
from hermes.quiver.ensemble import EnsembleModel
from hermes.quiver.exceptions import ModelConfigError, ModelExistsError, ModelNotFoundError, RepositoryError
from hermes.quiver.model import Model
from hermes.quiver.platform import Platform
from hermes.quiver.storage import Storage

__all__ = ["ModelRepository"]

logger = logging.getLogger("hermes.quiver.repository")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ModelRepository:
    """A Triton model repository: one folder per model with ``config.pbtxt`` and versions.

    Opening a repository reads every model back (config, platform, versions). Folders whose
    names start with ``.`` are ignored (hermes writes versions there before moving them into
    place).

    Args:
        root: a local path, ``memory://name``, ``gs://bucket/prefix`` (``hermes-quiver[gcs]``)
            or ``s3://bucket/prefix`` (``hermes-quiver[s3]``). A local root is created if
            missing; a bucket never is.
        clean: remove every model folder under ``root`` first (the predecessor's
            ``clean=True``: it also clears half-written folders without a config). Files
            directly in ``root`` are kept; a home directory or filesystem root is refused.
        **storage_options: passed to the fsspec filesystem (credentials, endpoint_url, ...);
            an option the filesystem does not declare raises instead of being ignored.

    Raises:
        RepositoryError: a model folder has no readable ``config.pbtxt``, or its config is
            invalid (names the file and the problem); the bucket does not exist; an
            unknown storage option.
    """

    def __init__(self, root: str | Path, clean: bool = False, **storage_options: Any) -> None:
        if not isinstance(clean, bool):
            raise RepositoryError(f"clean: expected True or False, got {clean!r}")
        self.storage = Storage(root, **storage_options)
        self._models: dict[str, Model] = {}
        if clean:
            self._clean()
        self.refresh()

    def _clean(self) -> None:
        if self.storage.is_local:
            here = Path(self.storage.root)
            if here == Path(here.anchor) or here == Path.home().resolve():
                raise RepositoryError(f"{here}: refusing clean=True on a home directory or filesystem root")
        names = self.storage.listdir()
        for name in names:
            self.storage.remove(name)
        if names:
            logger.info("clean=True: removed %d folder(s) from %s: %s", len(names), self.root, names)

    def __repr__(self) -> str:
        return f"ModelRepository({self.storage.url!r})"

    @property
    def root(self) -> str:
        """The repository's location (a local path or URL)."""
        return self.storage.url

    def refresh(self) -> None:
        """Re-read every model from storage."""
        models: dict[str, Model] = {}
        for name in self.storage.listdir():
            if name.startswith("."):
                continue
            models[name] = self._read(name)
        self._models = models

    def _read(self, name: str) -> Model:
        where = self.storage.display(name, "config.pbtxt")
        if not self.storage.exists(name, "config.pbtxt"):
            raise RepositoryError(f"{where}: missing; every model folder needs a config.pbtxt")
        try:
            text = self.storage.read_text(name, "config.pbtxt")
        except (OSError, UnicodeDecodeError) as exc:
            raise RepositoryError(f"{where}: cannot be read: {exc}") from exc
        try:
            config = ModelConfig.from_text(text, writer=self._writer(name), source=where)
        except ModelConfigError as exc:
            raise RepositoryError(str(exc)) from exc
        if config.name != name:
            raise RepositoryError(f"{where}: name {config.name!r} differs from the folder name {name!r}")
        return self._wrap(name, config)

    def _writer(self, name: str) -> Any:
        def write(text: str) -> None:
            self.storage.write_text(text, name, "config.pbtxt")

        return write

    def _wrap(self, name: str, config: ModelConfig) -> Model:
        cls = EnsembleModel if config.platform is Platform.ENSEMBLE else Model
        return cls(self, name, config)

    @property
    def models(self) -> dict[str, Model]:
        """``{name: Model}`` of every model, by name."""
        return dict(sorted(self._models.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[Model]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __getitem__(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"{self.root}: no model {name!r}; models are {sorted(self._models)}"
            ) from None

    def add(self, name: str, platform: Platform | str, force: bool = False) -> Model:
        """Create a model folder and write its initial ``config.pbtxt``.

        Args:
            name: the model name (letters, digits, ``_``, ``-``, ``.``; not starting with ``.``).
            platform: where it runs.
            force: if ``name`` is taken, use the lowest free ``name_N`` instead of raising.

        Returns:
            The new :class:`Model` (an :class:`EnsembleModel` for ``Platform.ENSEMBLE``).

        Raises:
            ModelExistsError: ``name`` is taken and ``force`` is False.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise RepositoryError(
                f"model name {name!r}: use letters, digits, '_', '-' and '.', not starting with '.'"
            )
        platform = Platform(platform)
        if name in self._models or self.storage.exists(name):
            if not force:
                raise ModelExistsError(
                    f"{self.storage.display(name)}: a model named {name!r} exists; reuse it "
                    f"(repo.models[{name!r}]), remove it first (repo.remove({name!r})), or pass force=True "
                    f"to add it under the next free name ({name}_0, ...)"
                )
            n = 0
            while f"{name}_{n}" in self._models or self.storage.exists(f"{name}_{n}"):
                n += 1
            name = f"{name}_{n}"
        config = ModelConfig(name=name, platform=platform, writer=self._writer(name))
        self.storage.makedirs(name)
        config.write()
        model = self._wrap(name, config)
        self._models[name] = model
        logger.info("added model %s (%s) to %s", name, platform.value, self.root)
        return model

    def remove(self, model: Model | str) -> None:
        """Delete a model folder and everything in it.

        Raises:
            ModelNotFoundError: no such model.
        """
        name = model.name if isinstance(model, Model) else model
        if name not in self._models:
            raise ModelNotFoundError(f"{self.root}: no model {name!r}; models are {sorted(self._models)}")
        self.storage.remove(name)
        del self._models[name]

    def delete(self) -> None:
        """Remove every model (the root folder or bucket itself is kept)."""
        for name in list(self._models):
            self.remove(name)
