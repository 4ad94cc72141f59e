"""Static files that ship inside installed Python packages, served under our own STATIC_URL.

plotly's wheel carries its browser library (plotly.min.js); this finder exposes that one file as
`vendor/plotly.min.js`, so pages draw charts with nothing fetched from another host."""
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent.joinpath(*parts)


PACKAGE_FILES = {
    "vendor/plotly.min.js": ("plotly", "package_data", "plotly.min.js"),
}


class PackageFileFinder(BaseFinder):
    def _files(self) -> dict[str, Path]:
        return {name: _package_file(package, *parts) for name, (package, *parts) in PACKAGE_FILES.items()}

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        found = self._files().get(path)
        if found is None or not found.exists():
            return [] if find_all else None
        return [str(found)] if find_all else str(found)

    def list(self, ignore_patterns):
        for name, path in self._files().items():
            if path.exists():
                storage = FileSystemStorage(location=str(path.parent))
                storage.prefix = str(Path(name).parent)
                yield path.name, storage
