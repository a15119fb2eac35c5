#!/usr/bin/env bash
# System libraries that Qt6 / napari need on a bare Debian or Ubuntu machine (headless included).
# Safe to run twice. Skips with a message when apt-get is missing or we cannot become root.
set -euo pipefail

PACKAGES=(
    xvfb xauth
    libgl1 libegl1 libopengl0 libglx-mesa0 libgl1-mesa-dri
    libxkbcommon0 libxkbcommon-x11-0
    libxcb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
    libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-cursor0 libxcb-xkb1 libxcb-sync1
    libxcb-render0 libxcb-shm0 libxcb-glx0
    libx11-xcb1 libxrender1 libxi6 libsm6 libice6
    libdbus-1-3 libfontconfig1 libfreetype6 libglib2.0-0
)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: apt-get not found; install the Qt6/OpenGL/X11 libraries and xvfb yourself:" >&2
    echo "  ${PACKAGES[*]}" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_system_deps: not root and no password-less sudo; skipping. Packages needed:" >&2
        echo "  ${PACKAGES[*]}" >&2
        exit 0
    fi
fi

# Only install what is missing, so a prepared machine needs no network.
MISSING=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        MISSING+=("$pkg")
    fi
done
if [ "${#MISSING[@]}" -eq 0 ]; then
    echo "install_system_deps: all system packages already installed."
    exit 0
fi

# Some names differ between releases (e.g. libglib2.0-0 vs libglib2.0-0t64): keep only known ones.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
AVAILABLE=()
for pkg in "${MISSING[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        AVAILABLE+=("$pkg")
    elif apt-cache show "${pkg}t64" >/dev/null 2>&1; then
        AVAILABLE+=("${pkg}t64")
    else
        echo "install_system_deps: package $pkg not available on this release; skipped." >&2
    fi
done
if [ "${#AVAILABLE[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${AVAILABLE[@]}"
fi
echo "install_system_deps: done."
