#!/usr/bin/env bash
# Wheel check: build the wheel, install it into a brand-new virtual environment and use it
# from an empty folder, the way a user would after `pip install napari-mentalmap[qt]`.
#
#   bash .ci/wheel_check.sh
#
# Steps: build the wheel -> new venv -> torch==2.13.0 first (as scripts/install.sh; honours
# TORCH_INDEX_URL) -> the wheel with its [qt] extra -> pip check -> from an empty temporary
# folder: npe2 validate, npe2 plugin discovery, the sample-data functions, a NIfTI
# read -> write -> read round trip of the bundled sample, `mentalmap predict anomaly` on the
# bundled FLAIR, `mentalmap train bruno` without the [train] extra (clear message, exit 2);
# finally nothing new may have been written into the installed package folder and the
# empty folder may hold only the outputs folder.
#
# Environment: PYTHON (interpreter for the new venv, default python3), BUILD_PYTHON (runs
# `-m build`, default .venv/bin/python when it exists), TORCH_INDEX_URL, KEEP_WHEEL_CHECK=1
# (keep the temporary folder). Prints a summary; exits non-zero when any step failed.
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
if [ -z "${BUILD_PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then BUILD_PYTHON="$REPO_ROOT/.venv/bin/python"; else BUILD_PYTHON="$PYTHON"; fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mentalmap-wheel-check.XXXXXX")"
VENV="$WORK/venv"
EMPTY="$WORK/empty"   # the user's working folder: must stay empty except for OUT
OUT="$EMPTY/out"
LOGS="$WORK/logs"
mkdir -p "$WORK/dist" "$EMPTY" "$LOGS"
cleanup() { if [ "${KEEP_WHEEL_CHECK:-0}" = "1" ]; then echo "wheel-check: kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

START=$SECONDS
SUMMARY=()
FAILED=0

# step NAME COMMAND...: run with its output in $LOGS/NAME.log; record PASS/FAIL and seconds.
step() {
    local name="$1"; shift
    local t0=$SECONDS
    if "$@" >"$LOGS/$name.log" 2>&1; then
        SUMMARY+=("PASS  $(printf '%4d' $((SECONDS - t0))) s  $name")
        echo "wheel-check: PASS $name ($((SECONDS - t0)) s)"
        return 0
    fi
    SUMMARY+=("FAIL  $(printf '%4d' $((SECONDS - t0))) s  $name")
    FAILED=1
    echo "wheel-check: FAIL $name ($((SECONDS - t0)) s); last lines of its output:" >&2
    tail -n 40 "$LOGS/$name.log" | sed 's/^/    /' >&2
    return 1
}

summary() {
    echo
    echo "wheel-check summary (${WHEEL_NAME:-no wheel}, $((SECONDS - START)) s in all):"
    printf '  %s\n' "${SUMMARY[@]}"
    if [ "$FAILED" = "0" ]; then echo "wheel-check: OK"; else echo "wheel-check: FAILED" >&2; fi
}

# A step the rest depends on: stop at its failure.
required() { step "$@" || { summary; exit 1; }; }

build_wheel() {
    if "$BUILD_PYTHON" -c "import build" 2>/dev/null; then
        "$BUILD_PYTHON" -m build --wheel --outdir "$WORK/dist" "$REPO_ROOT"
    else
        "$BUILD_PYTHON" -m pip wheel --no-deps --wheel-dir "$WORK/dist" "$REPO_ROOT"
    fi
}

install_torch() {
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$VENV/bin/python" -m pip install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    else
        "$VENV/bin/python" -m pip install "torch==$TORCH_VERSION"
    fi
}

install_wheel() {
    local extras
    extras="$("$VENV/bin/python" - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = wheel.read(name).decode()
print(" ".join(line.split(":", 1)[1].strip() for line in metadata.splitlines()
               if line.startswith("Provides-Extra:")))
PY
)"
    echo "extras in the wheel: ${extras:-none}"
    if [[ " $extras " == *" qt "* ]]; then
        "$VENV/bin/python" -m pip install "$WHEEL[qt]"
    else
        "$VENV/bin/python" -m pip install "$WHEEL"
    fi
}

# Every file of the installed package with size and modification time.
snapshot() { (cd "$PKG_DIR" && find . -type f -printf '%p %s %T@\n' | LC_ALL=C sort); }

check_discovery() {
    "$VENV/bin/python" - <<'PY'
import npe2
pm = npe2.PluginManager.instance()
pm.discover()
names = sorted(m.name for m in pm.iter_manifests())
assert "napari-mentalmap" in names, f"napari-mentalmap not registered; found: {names}"
manifest = pm.get_manifest("napari-mentalmap")
commands = [c.id for c in manifest.contributions.commands or []]
print(f"registered napari-mentalmap {manifest.package_version}: {len(commands)} commands")
PY
}

check_sample_data() {
    "$VENV/bin/python" - <<'PY'
from napari_mentalmap import _sample_data as samples
for function in (samples.sample_t1, samples.sample_flair, samples.sample_flair_with_lesions):
    layers = function()
    assert layers, function.__name__
    for data, kwargs, layer_type in layers:
        assert data.ndim == 3 and data.size > 0, (function.__name__, data.shape)
        print(f"{function.__name__}: {kwargs.get('name')!r} {layer_type} {data.shape} {data.dtype}")
PY
}

check_round_trip() {
    "$VENV/bin/python" - "$OUT/roundtrip" <<'PY'
import sys
from pathlib import Path
import numpy as np
from napari_mentalmap._sample_data import SAMPLE_LESIONS, SAMPLE_T1
from napari_mentalmap.io.nifti import read_volume, write_volume

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for source in (SAMPLE_T1, SAMPLE_LESIONS):
    volume = read_volume(source)
    written = write_volume(out / source.name, volume.data, volume)
    again = read_volume(written)
    assert again.data.shape == volume.data.shape, (again.data.shape, volume.data.shape)
    assert np.allclose(again.data, volume.data, atol=1e-3 * float(np.abs(volume.data).max())), source.name
    assert np.allclose(again.original_affine, volume.original_affine), source.name
    assert again.axcodes_original == volume.axcodes_original and again.is_labels == volume.is_labels
    print(f"{source.name}: {volume.data.shape} {volume.axcodes_original} labels={volume.is_labels} -> {written.name} ok")
PY
}

check_predict() {
    local flair
    flair="$("$VENV/bin/python" -c "from napari_mentalmap._sample_data import SAMPLE_FLAIR; print(SAMPLE_FLAIR)")"
    "$VENV/bin/mentalmap" predict anomaly -i "$flair" -o "$OUT/predict" --device cpu --threads 1 || return 1
    ls -l "$OUT/predict"
    [ -s "$OUT/predict/$(basename "$flair" .nii.gz)_anomaly.nii.gz" ]
}

check_predict_latent() {
    local t1
    t1="$("$VENV/bin/python" -c "from napari_mentalmap._sample_data import SAMPLE_T1; print(SAMPLE_T1)")"
    "$VENV/bin/mentalmap" predict latent -i "$t1" -o "$OUT/predict" --device cpu --threads 1 || return 1
    [ -s "$OUT/predict/$(basename "$t1" .nii.gz)_latents.npz" ] &&
        [ -s "$OUT/predict/$(basename "$t1" .nii.gz)_latent_reconstruction.nii.gz" ]
}

check_train_without_extra() {
    if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('lightning_fabric') is None)"; then
        echo "lightning_fabric is installed without the [train] extra: it should not be a core dependency"
        return 1
    fi
    local rc=0
    "$VENV/bin/mentalmap" train bruno --out "$OUT/train" >"$WORK/train.out" 2>&1 || rc=$?
    cat "$WORK/train.out"
    [ "$rc" = "2" ] && grep -q "pip install 'napari-mentalmap\[train\]'" "$WORK/train.out"
}

check_package_unchanged() {
    snapshot >"$WORK/package.after"
    if ! diff "$WORK/package.before" "$WORK/package.after"; then
        echo "files were added, removed or modified in $PKG_DIR (diff above: < before, > after)"
        return 1
    fi
    echo "$(wc -l <"$WORK/package.after") files in $PKG_DIR, none added, removed or modified"
}

check_empty_folder() {
    local extra
    extra="$(cd "$EMPTY" && find . -mindepth 1 -maxdepth 1 ! -name out)"
    if [ -n "$extra" ]; then
        echo "written into the working folder besides out/:"; echo "$extra"; return 1
    fi
    echo "working folder holds only out/:"; (cd "$EMPTY" && find . -type f | LC_ALL=C sort)
}

echo "wheel-check: repository $REPO_ROOT, temporary folder $WORK"
required build-wheel build_wheel
WHEEL="$(ls "$WORK"/dist/*.whl)"
WHEEL_NAME="$(basename "$WHEEL")"
required create-venv "$PYTHON" -m venv "$VENV"
required install-torch install_torch
required install-wheel install_wheel
step pip-check "$VENV/bin/python" -m pip check

cd "$EMPTY"
export QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PKG_DIR="$("$VENV/bin/python" -c "import importlib.util as u; print(u.find_spec('napari_mentalmap').submodule_search_locations[0])")"
case "$PKG_DIR" in
    "$VENV"/*) echo "wheel-check: package installed in $PKG_DIR" ;;
    *) echo "wheel-check: napari_mentalmap resolves to $PKG_DIR, not inside the new venv" >&2; FAILED=1; summary; exit 1 ;;
esac
snapshot >"$WORK/package.before"

step npe2-validate "$VENV/bin/npe2" validate napari-mentalmap
step npe2-discover check_discovery
step sample-data check_sample_data
step nifti-round-trip check_round_trip
step predict-anomaly check_predict
step predict-latent check_predict_latent
step train-needs-extra check_train_without_extra
step package-unchanged check_package_unchanged
step working-folder-clean check_empty_folder

summary
exit "$FAILED"
