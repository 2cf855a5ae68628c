"""``make plots-template``: the page template that lets ``dvc plots show`` draw without internet.

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN: opened offline, it is blank.
``.dvc/config`` names this project's template instead (``plots.html_template``), which holds the
three libraries inline, at the versions DVC's renderer targets, with their licences. This command
rebuilds it from the npm registry: each package's tarball is checked against its pinned sha512
before a byte of it is used, and the same pins give the same file.

Run: ``python -m mnist_pipeline.plots_template [--check]`` (``--check``: exit 1 if the committed
template differs from what the pins build).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline import cli
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import write_text

TEMPLATE = Path(".dvc/plots/offline.html")
REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL = 32 << 20  # bytes
# (package, version, npm's dist.integrity): the versions dvc-render's VegaRenderer loads from its CDN
PACKAGES = (
    (
        "vega",
        "5.20.2",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    (
        "vega-lite",
        "5.2.0",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    (
        "vega-embed",
        "6.18.2",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
)

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega, Vega-Lite and vega-embed inline (python -m mnist_pipeline.plots_template): no network needed -->
{libraries}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(package: str, version: str, integrity: str, registry: str = REGISTRY) -> bytes:
    """The npm tarball of ``package@version``; DataError unless its sha512 is ``integrity``."""
    url = f"{registry}/{package}/-/{package}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - a fixed https URL
            data: bytes = response.read(MAX_TARBALL + 1)
    except OSError as exc:
        raise DataError(f"cannot fetch {url} ({exc}); the npm registry must be reachable") from exc
    if len(data) > MAX_TARBALL:
        raise DataError(f"{url} is over {MAX_TARBALL} bytes; not the pinned package")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise DataError(f"{url} has {digest}, not the pinned {integrity}; refusing it")
    return data


def script(package: str, version: str, tarball: bytes) -> str:
    """A ``<script>`` element with the package's minified build, under a comment holding its licence."""
    wanted = (f"build/{package}.min.js", "LICENSE")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tgz:
        try:
            code, licence = (tgz.extractfile(f"package/{name}") for name in wanted)
        except KeyError as exc:
            raise DataError(f"{package}@{version} has no package/{exc.args[0]}") from exc
        if code is None or licence is None:
            raise DataError(f"{package}@{version}: {' or '.join(wanted)} is not a regular file")
        js, text = code.read().decode("utf-8"), licence.read().decode("utf-8")
    header = f"/*! {package}@{version} (npm), inlined for offline use. Its licence:\n{text.replace('*/', '* /')}\n*/"
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)  # the same to JavaScript, no end tag to HTML
    return f"    <script>\n{header}\n{js}\n    </script>"


def build() -> str:
    """The template's text, from the pinned packages."""
    libraries = "\n".join(script(p, v, fetch(p, v, i)) for p, v, i in PACKAGES)
    return PAGE.format(libraries=libraries, refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.ArgumentParser(prog="plots-template", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed template is not what the pins build"
    )
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if not TEMPLATE.is_file() or TEMPLATE.read_text(encoding="utf-8") != text:
            print(
                f"error: plots-template: {TEMPLATE} is not what the pinned packages build; run `make plots-template`",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"{TEMPLATE} is what the pinned packages build")
        return
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    write_text(TEMPLATE, text)
    print(f"wrote {TEMPLATE} ({len(text.encode())} bytes)")


if __name__ == "__main__":
    cli.run(main, "plots-template")
