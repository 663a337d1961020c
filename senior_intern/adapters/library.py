"""``AdapterLibrary``: list, inspect, load, rename, describe, delete, import and export adapters.

The library is a folder of adapter folders (see ``store.py`` for the layout). A folder that is
not a usable adapter is listed as damaged with the reason — never skipped silently, never fatal
for the listing. Ids and names can never reach outside the library root.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from senior_intern.layout import folder_size, read_json_object
from senior_intern.adapters.store import (
    CONFIG_FILE, FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE, check_id, new_adapter_id, remove_stale_temp_folders, temp_folder,
    write_json,
)


@dataclass(frozen=True)
class AdapterInfo:
    """One row of the library listing."""

    id: str
    name: str
    path: Path
    description: str = ""
    created: str = ""
    size_bytes: int = 0
    rank: int | None = None
    alpha: float | None = None
    base_model: str = ""
    base_model_hash: str = ""
    target_modules: tuple[str, ...] = ()
    final_loss: float | None = None
    best_validation_loss: float | None = None
    imported: bool = False
    damaged: str | None = None  # why the folder is not a usable adapter


def check_name(name: str) -> str:
    """A display name: not empty, one line, no path separators or '..'."""
    clean = name.strip()
    if not clean:
        raise ValueError("Adapter name must not be empty")
    if len(clean) > 200 or any(c in clean for c in "/\\\n\r\t\0") or clean.startswith(".."):
        raise ValueError(f"Invalid adapter name {name!r}: one line, at most 200 characters, no '/', '\\' or leading '..'")
    return clean


def _weight_shapes(path: Path) -> dict[str, list[int]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{path.name} is unreadable ({exc})") from exc


class AdapterLibrary:
    """The adapters under ``root`` (created when missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(self.root)  # left by a process killed while it wrote an adapter

    def _path(self, adapter_id: str) -> Path:
        path = self.root / check_id(adapter_id)
        if path.resolve().parent != self.root.resolve():
            raise ValueError(f"Invalid adapter id {adapter_id!r}: outside the library")
        return path

    def _existing(self, adapter_id: str) -> Path:
        path = self._path(adapter_id)
        if not path.is_dir():
            raise FileNotFoundError(f"No adapter with id {adapter_id!r} in {self.root}")
        return path

    # --- reading --------------------------------------------------------------------------------
    def _info(self, path: Path) -> AdapterInfo:
        size = folder_size(path)
        base = {"id": path.name, "name": path.name, "path": path, "size_bytes": size}
        try:
            if not (path / CONFIG_FILE).is_file():
                raise ValueError(f"{CONFIG_FILE} is missing")
            if not (path / WEIGHTS_FILE).is_file():
                raise ValueError(f"{WEIGHTS_FILE} is missing")
            config = read_json_object(path / CONFIG_FILE)
            meta = read_json_object(path / METADATA_FILE) if (path / METADATA_FILE).is_file() else None
            shapes = _weight_shapes(path / WEIGHTS_FILE)
            if not any(".lora_A" in k or "lora_embedding_A" in k for k in shapes):
                raise ValueError(f"{WEIGHTS_FILE} holds no LoRA tensors")
        except ValueError as exc:
            return AdapterInfo(**base, damaged=str(exc))
        targets = config.get("target_modules") or []
        if isinstance(targets, str):
            targets = [targets]
        if meta is None:  # a PEFT folder made elsewhere: infer what we can
            created = datetime.fromtimestamp((path / WEIGHTS_FILE).stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            return AdapterInfo(**base, created=created, rank=config.get("r"), alpha=config.get("lora_alpha"),
                               base_model=str(config.get("base_model_name_or_path") or ""), target_modules=tuple(targets), imported=True)
        base_model = meta.get("base_model") or {}
        return AdapterInfo(
            id=path.name,
            name=str(meta.get("name") or path.name),
            path=path,
            description=str(meta.get("description") or ""),
            created=str(meta.get("created") or ""),
            size_bytes=size,
            rank=meta.get("rank", config.get("r")),
            alpha=meta.get("alpha", config.get("lora_alpha")),
            base_model=str(base_model.get("path") or config.get("base_model_name_or_path") or ""),
            base_model_hash=str(base_model.get("hash") or ""),
            target_modules=tuple(meta.get("target_modules") or targets),
            final_loss=meta.get("final_loss"),
            best_validation_loss=meta.get("best_validation_loss"),
            imported=bool(meta.get("imported", False)),
        )

    def list(self) -> list[AdapterInfo]:
        """Every adapter folder, newest first; damaged ones included with their reason."""
        infos = [self._info(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(infos, key=lambda i: (i.created or "", i.id), reverse=True)

    def get(self, adapter_id: str) -> AdapterInfo:
        """One adapter's listing entry."""
        return self._info(self._existing(adapter_id))

    def metadata(self, adapter_id: str) -> dict[str, Any]:
        """The adapter's ``senior_intern.json`` (empty for a damaged or foreign adapter)."""
        path = self._existing(adapter_id) / METADATA_FILE
        try:
            return read_json_object(path) if path.is_file() else {}
        except ValueError:
            return {}

    def load(self, adapter_id: str) -> tuple[AdapterInfo, dict[str, Any], dict[str, Any]]:
        """(info, adapter_config, weights); checks every tensor's rank against the config."""
        from safetensors.torch import load_file

        info = self.get(adapter_id)
        if info.damaged:
            raise ValueError(f"Adapter {adapter_id!r} is damaged: {info.damaged}")
        config = read_json_object(info.path / CONFIG_FILE)
        weights = load_file(str(info.path / WEIGHTS_FILE))
        rank = int(config.get("r", 0))
        patterns = config.get("rank_pattern") or {}
        for key, tensor in weights.items():
            expected = next((int(r) for pat, r in patterns.items() if pat in key), rank)
            if ".lora_A" in key and tensor.shape[0] != expected:
                raise ValueError(f"Adapter {adapter_id!r}: {key} has rank {tensor.shape[0]}, the config says {expected}")
            if ".lora_B" in key and tensor.shape[-1] != expected:
                raise ValueError(f"Adapter {adapter_id!r}: {key} has rank {tensor.shape[-1]}, the config says {expected}")
        return info, config, weights

    # --- changing -------------------------------------------------------------------------------
    def _update_meta(self, adapter_id: str, **changes: Any) -> AdapterInfo:
        path = self._existing(adapter_id)
        info = self._info(path)
        if info.damaged:
            raise ValueError(f"Adapter {adapter_id!r} is damaged ({info.damaged}); it cannot be changed")
        meta = self.metadata(adapter_id) or self._inferred_meta(info)
        meta.update(changes)
        write_json(path / METADATA_FILE, meta)
        return self._info(path)

    @staticmethod
    def _inferred_meta(info: AdapterInfo) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "id": info.id, "name": info.name, "description": info.description,
            "created": info.created, "base_model": {"path": info.base_model, "hash": ""}, "rank": info.rank,
            "alpha": info.alpha, "target_modules": list(info.target_modules), "imported": True,
        }

    def rename(self, adapter_id: str, name: str) -> AdapterInfo:
        """Change the display name (the folder keeps its id)."""
        return self._update_meta(adapter_id, name=check_name(name))

    def set_description(self, adapter_id: str, description: str) -> AdapterInfo:
        """Change the description."""
        return self._update_meta(adapter_id, description=description.strip())

    def delete(self, adapter_id: str) -> None:
        """Remove the adapter's own folder, nothing else."""
        path = self._existing(adapter_id)
        shutil.rmtree(path)

    def import_(self, source: str | Path, name: str | None = None, base: str | Path | None = None) -> AdapterInfo:
        """Copy a PEFT adapter folder made elsewhere into the library (metadata inferred).

        A folder with only a pickled ``adapter_model.bin`` is read with
        ``torch.load(weights_only=True)`` and converted to safetensors, or refused. With ``base``
        (a model folder or ``.gguf``), every LoRA tensor must fit a module of that base, and the
        base is recorded as the adapter's.
        """
        source = Path(source)
        if not source.is_dir():
            raise FileNotFoundError(f"Adapter folder not found: {source}")
        if not (source / CONFIG_FILE).is_file():
            raise ValueError(f"{source} is not a PEFT adapter folder: {CONFIG_FILE} is missing")
        config = read_json_object(source / CONFIG_FILE)
        if str(config.get("peft_type", "LORA")).upper() != "LORA":
            raise ValueError(f"{source}: only LoRA adapters are supported (peft_type {config.get('peft_type')!r})")
        adapter_id = new_adapter_id(name or source.name)
        tmp = temp_folder(self.root, adapter_id)
        tmp.mkdir()
        try:
            shutil.copy2(source / CONFIG_FILE, tmp / CONFIG_FILE)
            if (source / WEIGHTS_FILE).is_file():
                shutil.copy2(source / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
            elif (source / "adapter_model.bin").is_file():
                _convert_bin(source / "adapter_model.bin", tmp / WEIGHTS_FILE)
            else:
                raise ValueError(f"{source} has no {WEIGHTS_FILE} (nor adapter_model.bin)")
            probe = self._info(tmp)
            if probe.damaged:
                raise ValueError(f"{source} is not a usable adapter: {probe.damaged}")
            if base is not None:
                from senior_intern.adapters.fit import check_fits

                check_fits(_weight_shapes(tmp / WEIGHTS_FILE), base)
            meta = self._inferred_meta(probe)
            if base is not None:
                meta["base_model"] = {"path": str(base), "hash": ""}
            meta.update(id=adapter_id, name=check_name(name or source.name),
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), imported_from=str(source))
            write_json(tmp / METADATA_FILE, meta)
            final = self._path(adapter_id)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._info(final)

    def export(self, adapter_id: str, dest: str | Path) -> Path:
        """Copy the adapter folder to ``dest`` (which must not exist yet)."""
        path = self._existing(adapter_id)
        dest = Path(dest)
        if dest.exists():
            raise FileExistsError(f"Export destination already exists: {dest}")
        shutil.copytree(path, dest)
        return dest


def _convert_bin(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # refuse anything that needs free unpickling
        # torch's own message advises retrying with weights_only=False, i.e. running the file's code: not repeated.
        reason = str(exc).split("\n")[0].strip()
        raise ValueError(
            f"{src} holds more than plain tensors (Python objects that would run code when unpickled) and was "
            f"refused ({reason}); convert the adapter to safetensors where it was made and import that"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{src} does not hold a dict of tensors; refused")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
