# kiln-warmup CLI (included from integrations/CMakeLists.txt). The spec and argument parsing is a
# plain-C++ library of its own so that its unit tests need no LibTorch.
add_library(kiln_warmup_args STATIC warmup/input_spec.cpp warmup/cli_args.cpp)
target_include_directories(kiln_warmup_args PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(kiln_warmup_args PRIVATE ${KILN_WARNINGS})
set_target_properties(kiln_warmup_args PROPERTIES CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON)
target_link_libraries(kiln_warmup_args PUBLIC kiln_ir kiln_support)

add_library(kiln_warmup_lib STATIC warmup/warmup.cpp)
target_compile_options(kiln_warmup_lib PRIVATE ${KILN_WARNINGS})
set_target_properties(kiln_warmup_lib PROPERTIES CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON)
target_link_libraries(kiln_warmup_lib PUBLIC kiln_warmup_args kiln)

kiln_executable(kiln_warmup warmup/kiln_warmup_main.cpp)
set_target_properties(kiln_warmup PROPERTIES OUTPUT_NAME kiln-warmup)
target_link_libraries(kiln_warmup PRIVATE kiln_warmup_lib kiln)
target_link_libraries(kiln_warmup_lib PRIVATE ${KILN_JSON})  # Note [JSON stays private]
