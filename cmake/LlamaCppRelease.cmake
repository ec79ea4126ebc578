# llama.cpp itself as a reference for tests and benchmarks: the libllama/ggml that node-llama-cpp ships (npm, pinned
# in tests/integration/package-lock.json) and the headers of that very release, read from node-llama-cpp's source
# bundle with git at configure time, so that programs built here use that library's ABI.
#   qz_llama_cpp_program(TARGET SOURCE...): an executable linked to that libllama, or nothing (QZ_LLAMA_CPP_FOUND
#   false) when node-llama-cpp, its bundle or git are absent, or under the sanitizers (the library is not built
#   with them).
set(QZ_NODE_LLAMA ${PROJECT_SOURCE_DIR}/tests/integration/node_modules/node-llama-cpp/llama)
set(QZ_LLAMA_BIN_DIR ${PROJECT_SOURCE_DIR}/tests/integration/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64)
set(QZ_LLAMA_CPP_INCLUDE ${PROJECT_BINARY_DIR}/llama_cpp_include)
set(QZ_LLAMA_CPP_FOUND FALSE)
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS ${QZ_NODE_LLAMA}/gitRelease.bundle AND EXISTS ${QZ_LLAMA_BIN_DIR}/libllama.v0.5.0.so
   AND NOT QUANTIZE_SANITIZE)
  if(NOT EXISTS ${QZ_LLAMA_CPP_INCLUDE}/llama.h)
    set(_repo ${PROJECT_BINARY_DIR}/llama_cpp_release.git)
    execute_process(COMMAND ${GIT_EXECUTABLE} clone -q --bare ${QZ_NODE_LLAMA}/gitRelease.bundle ${_repo}
                    OUTPUT_QUIET ERROR_QUIET)
    file(MAKE_DIRECTORY ${QZ_LLAMA_CPP_INCLUDE})
    foreach(h include/llama.h ggml/include/ggml.h ggml/include/ggml-backend.h ggml/include/ggml-alloc.h
              ggml/include/ggml-cpu.h ggml/include/ggml-opt.h ggml/include/gguf.h)
      get_filename_component(_name ${h} NAME)
      execute_process(COMMAND ${GIT_EXECUTABLE} --git-dir=${_repo} show HEAD:${h}
                      OUTPUT_FILE ${QZ_LLAMA_CPP_INCLUDE}/${_name} ERROR_QUIET)
    endforeach()
    file(REMOVE_RECURSE ${_repo})
  endif()
  if(EXISTS ${QZ_LLAMA_CPP_INCLUDE}/llama.h AND EXISTS ${QZ_LLAMA_CPP_INCLUDE}/ggml-backend.h)
    set(QZ_LLAMA_CPP_FOUND TRUE)
  endif()
endif()

function(qz_llama_cpp_program target)
  add_executable(${target} ${ARGN})
  target_include_directories(${target} SYSTEM PRIVATE ${QZ_LLAMA_CPP_INCLUDE})
  target_link_libraries(${target} PRIVATE ${QZ_LLAMA_BIN_DIR}/libllama.v0.5.0.so ${QZ_LLAMA_BIN_DIR}/libggml.v0.5.0.so
                                          ${QZ_LLAMA_BIN_DIR}/libggml-base.so)
  target_compile_definitions(${target} PRIVATE QZ_LLAMA_BIN_DIR="${QZ_LLAMA_BIN_DIR}")
  set_target_properties(${target} PROPERTIES BUILD_RPATH ${QZ_LLAMA_BIN_DIR})
endfunction()
