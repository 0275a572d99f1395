# kiln_embed_files(<target> <symbol> FILES a.cuh b.cuh ...)
# Generates generated/<symbol>.cpp holding each file's text, so device helpers live in real .cuh
# files and are embedded at build time. Lookup: kiln::embedded::<symbol>(name) -> std::string_view.
function(kiln_embed_files target symbol)
  cmake_parse_arguments(ARG "" "" "FILES" ${ARGN})
  set(out "${PROJECT_BINARY_DIR}/generated/${symbol}.cpp")
  set(abs_files "")
  foreach(f ${ARG_FILES})
    get_filename_component(af "${f}" ABSOLUTE)
    list(APPEND abs_files "${af}")
  endforeach()
  # '|'-joined: a ';' list would be split into separate arguments by add_custom_command.
  string(REPLACE ";" "|" joined_files "${abs_files}")
  add_custom_command(
    OUTPUT "${out}"
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DSYMBOL=${symbol} "-DFILES=${joined_files}"
            -P "${PROJECT_SOURCE_DIR}/cmake/KilnEmbedRun.cmake"
    DEPENDS ${abs_files} "${PROJECT_SOURCE_DIR}/cmake/KilnEmbedRun.cmake"
    COMMENT "Embedding ${symbol}")
  target_sources(${target} PRIVATE "${out}")
endfunction()
