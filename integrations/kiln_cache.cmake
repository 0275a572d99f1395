# kiln-cache CLI (included from integrations/CMakeLists.txt). Plain C++: links only kiln_cache.
kiln_executable(kiln_cache_cli kiln_cache_main.cpp)
set_target_properties(kiln_cache_cli PROPERTIES OUTPUT_NAME kiln-cache)
target_link_libraries(kiln_cache_cli PRIVATE kiln_cache)
