# Write the bytes of IN as a C array NAME (16-byte aligned, plus NAME_size)
# into OUT. Run as: cmake -DIN=file -DOUT=file.c -DNAME=sym -P ckalloc_embed.cmake
# Used for the replay kernels' fatbin (kernels/replay.cu -> launch.c).
if(NOT IN OR NOT OUT OR NOT NAME)
  message(FATAL_ERROR "ckalloc_embed.cmake: IN, OUT and NAME are required")
endif()
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR nbytes "${nhex} / 2")
if(nbytes EQUAL 0)
  message(FATAL_ERROR "ckalloc_embed.cmake: ${IN} is empty")
endif()
# 16 bytes a line: "0xab," each.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" body "${body}")
get_filename_component(in_name "${IN}" NAME)
file(WRITE "${OUT}.tmp"
  "/* Generated from ${in_name} by cmake/ckalloc_embed.cmake: do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const unsigned char ${NAME}[];\n"
  "extern const size_t ${NAME}_size;\n"
  "__attribute__((aligned(16))) const unsigned char ${NAME}[] = {\n${body}\n};\n"
  "const size_t ${NAME}_size = ${nbytes};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
