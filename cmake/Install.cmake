# `cmake --install build --prefix P`: the quantize binary, the core library, its public headers and an exported CMake
# package, so that a consumer's find_package(quantize CONFIG REQUIRED) + target_link_libraries(app quantize::core)
# builds (tests/install_consumer is such a consumer; the test suite builds it against an installed tree).
include(CMakePackageConfigHelpers)

install(TARGETS quantize RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS quantize_core EXPORT quantizeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/qz DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(QUANTIZE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/quantize)
install(EXPORT quantizeTargets NAMESPACE quantize:: FILE quantizeTargets.cmake DESTINATION ${QUANTIZE_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/quantizeConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/quantizeConfig.cmake
                              INSTALL_DESTINATION ${QUANTIZE_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/quantizeConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/quantizeConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/quantizeConfigVersion.cmake
        DESTINATION ${QUANTIZE_CMAKE_DIR})
