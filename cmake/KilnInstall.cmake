# install() rules and an exported package: a user's project does
#   find_package(kiln REQUIRED)   # with CMAKE_PREFIX_PATH naming kiln's prefix and LibTorch's
#   target_link_libraries(app PRIVATE kiln::kiln)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(_kiln_libs GLOBAL PROPERTY KILN_LIBRARIES)
install(TARGETS ${_kiln_libs} kiln EXPORT kilnTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(_dir src jit codegen cache integrations)
  install(DIRECTORY ${_dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kiln/${_dir}
    FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh")
endforeach()
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} PATTERN "*.in" EXCLUDE)
install(FILES ${PROJECT_BINARY_DIR}/generated/kiln/version.h  # Note [Versions]
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kiln)
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
configure_package_config_file(cmake/kilnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kilnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kilnConfig.cmake ${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
install(FILES LICENSE NOTICE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/kiln)
