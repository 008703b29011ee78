# blip2_add_part: one call declares an optional part of blip2 (an add-on target that brings a dependency).
#
#   blip2_add_part(<part>
#     FIND <package> [<find_package arguments>...]  |  PKG <prefix> <module>...
#     [COMPONENTS <component>...]
#     TARGETS <dependency target>...
#     [DEFINE <macro>[=<value>]...]
#     [DESCRIPTION "<what the part is>"])
#
# FIND runs find_package(<package> <arguments> QUIET [COMPONENTS ...]); PKG runs
# pkg_check_modules(<prefix> QUIET IMPORTED_TARGET <module>...) (whose target is PkgConfig::<prefix>).
# The dependency counts as found when every TARGETS entry exists afterwards. Then, and only when the
# option BLIP2_ENABLE_<PART> (default ON) is on, the part is built:
#   blip2_<part>            INTERFACE library linking blip2 and TARGETS, with DEFINE as compile definitions
#                           (a bare NAME means NAME=1)
#   blip2::<part>           its alias; installed and exported as blip2::<part>
#   BLIP2_WITH_<PART>       ON or OFF, in the caller's scope
#   blip2_parts             the caller's list of parts built, <part> appended
# Otherwise one status line says why the part is missing. Every declared part (built or not) is recorded
# in the global property BLIP2_DECLARED_PARTS, and how to find its dependency again in
# BLIP2_PARTS_CONFIG_CODE, which blip2Config.cmake.in replays for an installed blip2.
include_guard(GLOBAL)

function(blip2_add_part part)
  cmake_parse_arguments(PARSE_ARGV 1 P "" "DESCRIPTION" "FIND;PKG;COMPONENTS;TARGETS;DEFINE")
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "blip2_add_part(${part}): unexpected arguments: ${P_UNPARSED_ARGUMENTS}")
  endif()
  if((P_FIND AND P_PKG) OR (NOT P_FIND AND NOT P_PKG) OR NOT P_TARGETS)
    message(FATAL_ERROR "blip2_add_part(${part}): needs exactly one of FIND and PKG, and TARGETS")
  endif()
  if(P_PKG)
    list(LENGTH P_PKG n)
    if(n LESS 2 OR P_COMPONENTS)
      message(FATAL_ERROR "blip2_add_part(${part}): PKG takes <prefix> <module>..., and no COMPONENTS")
    endif()
  endif()
  string(TOUPPER "${part}" PART)
  set(what "blip2::${part}")  # for the messages
  if(P_DESCRIPTION)
    string(APPEND what " (${P_DESCRIPTION})")
  endif()

  # What to look for, as a phrase for the messages: "dnnl", "MPI (CXX)", "stb through pkg-config".
  if(P_FIND)
    list(GET P_FIND 0 dep)
    if(P_COMPONENTS)
      list(JOIN P_COMPONENTS " " comps)
      string(APPEND dep " (${comps})")
    endif()
  else()
    set(modules ${P_PKG})
    list(POP_FRONT modules)
    list(JOIN modules " " dep)
    string(APPEND dep " through pkg-config")
  endif()

  # The same search, replayed by blip2Config.cmake for an installed blip2.
  set_property(GLOBAL APPEND PROPERTY BLIP2_DECLARED_PARTS ${part})
  set(code "")
  foreach(field IN ITEMS FIND COMPONENTS PKG TARGETS)
    string(TOLOWER ${field} name)
    string(APPEND code "set(_blip2_${part}_${name} \"${P_${field}}\")\n")
  endforeach()
  string(APPEND code "set(_blip2_${part}_dep \"${dep}\")\n")
  set_property(GLOBAL APPEND_STRING PROPERTY BLIP2_PARTS_CONFIG_CODE "${code}")

  option(BLIP2_ENABLE_${PART} "Build ${what} when ${dep} is found" ON)
  set(found FALSE)
  if(BLIP2_ENABLE_${PART})
    if(P_FIND)
      set(find_args ${P_FIND})
      list(POP_FRONT find_args package)
      if(P_COMPONENTS)
        find_package(${package} ${find_args} QUIET COMPONENTS ${P_COMPONENTS})
      else()
        find_package(${package} ${find_args} QUIET)
      endif()
    else()
      find_package(PkgConfig QUIET)
      if(PkgConfig_FOUND)
        list(GET P_PKG 0 prefix)
        pkg_check_modules(${prefix} QUIET IMPORTED_TARGET ${modules})
      endif()
    endif()
    set(found TRUE)
    foreach(t IN LISTS P_TARGETS)
      if(NOT TARGET ${t})
        set(found FALSE)
      endif()
    endforeach()
  endif()

  if(NOT found)
    if(BLIP2_ENABLE_${PART})
      message(STATUS "blip2: ${dep} not found; ${what} is not available")
    else()
      message(STATUS "blip2: ${what} switched off (BLIP2_ENABLE_${PART}=OFF)")
    endif()
    set(BLIP2_WITH_${PART} OFF PARENT_SCOPE)
    return()
  endif()

  add_library(blip2_${part} INTERFACE)
  add_library(blip2::${part} ALIAS blip2_${part})
  set_target_properties(blip2_${part} PROPERTIES EXPORT_NAME ${part})
  target_link_libraries(blip2_${part} INTERFACE blip2 ${P_TARGETS})
  set(defines)
  foreach(d IN LISTS P_DEFINE)
    if(NOT d MATCHES "=")
      string(APPEND d "=1")
    endif()
    list(APPEND defines ${d})
  endforeach()
  if(defines)
    target_compile_definitions(blip2_${part} INTERFACE ${defines})
  endif()
  set(BLIP2_WITH_${PART} ON PARENT_SCOPE)
  set(blip2_parts ${blip2_parts} ${part} PARENT_SCOPE)
endfunction()
