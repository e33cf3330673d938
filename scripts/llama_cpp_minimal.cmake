# Included by llama.cpp's own project() when `make` builds llama-cpp-python (see the Makefile's
# LLAMA_CMAKE_ARGS). llama-cpp-python forces llama.cpp's `common` helpers on (chat parsers,
# argument parsing, model downloads over HTTP) although its Python bindings load only
# libllama and libggml; this variable, set in llama.cpp's scope, leaves them out.
set(LLAMA_BUILD_COMMON OFF)
