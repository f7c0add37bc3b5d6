# Sourced by the Makefile's recipes: points the build at libtorch (the user's LIBTORCH, else
# the torch wheel in .venv) and puts cargo-installed tools on PATH.
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${LIBTORCH:-}" ]; then
  for d in "$(pwd)"/.venv/lib/python3*/site-packages/torch; do
    [ -e "$d/lib/libtorch.so" ] && export LIBTORCH="$d"
  done
fi
