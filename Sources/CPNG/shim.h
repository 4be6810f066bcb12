#ifndef CPNG_SHIM_H
#define CPNG_SHIM_H
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* libpng reports errors by calling an error function that must not return. These helpers install one that records
   the message and longjmps back into the guarded helper that made the call, which then returns nonzero; Swift never
   sees a longjmp. Every libpng call that can fail goes through a helper below. */

/* Input bytes, output buffer (grown with realloc) and the last error message of one read or write. */
typedef struct {
    const unsigned char *input;
    size_t inputSize, position;
    unsigned char *output;
    size_t outputSize, outputCapacity;
    char message[256];
} cpng_io;

static inline void cpng_error(png_structp png, png_const_charp msg) {
    cpng_io *io = (cpng_io *)png_get_error_ptr(png);
    strncpy(io->message, msg ? msg : "unknown libpng error", sizeof io->message - 1);
    io->message[sizeof io->message - 1] = 0;
    png_longjmp(png, 1);
}

static inline void cpng_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static inline void cpng_read_fn(png_structp png, png_bytep out, size_t n) {
    cpng_io *io = (cpng_io *)png_get_io_ptr(png);
    if (n > io->inputSize - io->position) png_error(png, "unexpected end of file (the PNG is truncated)");
    memcpy(out, io->input + io->position, n);
    io->position += n;
}

static inline void cpng_write_fn(png_structp png, png_bytep data, size_t n) {
    cpng_io *io = (cpng_io *)png_get_io_ptr(png);
    if (n > io->outputCapacity - io->outputSize) {
        size_t capacity = io->outputCapacity * 2 > io->outputSize + n ? io->outputCapacity * 2 : io->outputSize + n + 4096;
        unsigned char *grown = (unsigned char *)realloc(io->output, capacity);
        if (!grown) png_error(png, "out of memory");
        io->output = grown;
        io->outputCapacity = capacity;
    }
    memcpy(io->output + io->outputSize, data, n);
    io->outputSize += n;
}

static inline void cpng_flush_fn(png_structp png) { (void)png; }

/* A read struct reading from io->input (NULL when out of memory); ancillary chunks are capped at 16 MB. */
static inline png_structp cpng_create_read(cpng_io *io) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, io, cpng_error, cpng_warning);
    if (png) {
        png_set_read_fn(png, io, cpng_read_fn);
        png_set_chunk_malloc_max(png, 16u << 20);
    }
    return png;
}

static inline png_structp cpng_create_write(cpng_io *io) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, io, cpng_error, cpng_warning);
    if (png) png_set_write_fn(png, io, cpng_write_fn, cpng_flush_fn);
    return png;
}

/* Reads the chunks up to the image data (IHDR, PLTE, tRNS...). */
static inline int cpng_read_info(png_structp png, png_infop info) {
    if (setjmp(png_jmpbuf(png))) return 1;
    png_read_info(png, info);
    return 0;
}

/* Decodes the image into `rows` as 8-bit gray (1 channel) or RGB (3): palettes expanded, low bit depths scaled up,
   16-bit samples reduced to their high byte, alpha dropped (not composited), gray replicated when `channels` is 3. */
static inline int cpng_read_image(png_structp png, png_infop info, int channels, png_bytepp rows) {
    if (setjmp(png_jmpbuf(png))) return 1;
    int colorType = png_get_color_type(png, info);
    if (colorType == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (channels == 3 && !(colorType & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)png_get_image_width(png, info) * channels)
        png_error(png, "unexpected row layout after conversion");
    png_read_image(png, rows);
    png_read_end(png, NULL);
    return 0;
}

/* Encodes 8-bit gray or RGB rows into io->output (default compression, as PIL). */
static inline int cpng_write_image(png_structp png, png_infop info, png_uint_32 width, png_uint_32 height,
                                   int channels, png_bytepp rows) {
    if (setjmp(png_jmpbuf(png))) return 1;
    png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    return 0;
}
#endif
