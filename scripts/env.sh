# Sourced by the Makefile's recipes: puts cargo-installed tools on PATH. libtorch comes from
# the user's LIBTORCH, else from .cargo/config.toml (.venv/libtorch, which scripts/setup.sh
# links to the torch wheel), the same value a plain `cargo build` gets.
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${LIBTORCH:-}" ] && [ ! -e .venv/libtorch/lib/libtorch.so ]; then
  # A .venv made before the link existed: point at the wheel directly.
  for d in "$(pwd)"/.venv/lib/python3*/site-packages/torch; do
    [ -e "$d/lib/libtorch.so" ] && export LIBTORCH="$d"
  done
fi
