/*
 * quant_harness: llama.cpp's own quantizers as a byte-exact judge for modelpack's kernels.
 *
 * Reads little-endian f32 values (rows of N_PER_ROW) from a file or stdin and writes what ggml
 * produces for them, so tests can compare our bytes with the C reference rather than with a port
 * of it. Linked statically against the libggml-base built by `cargo xtask llama`.
 *
 * usage: quant_harness TYPE N_PER_ROW [--mode ref|chunk|dequant] [--weights FILE] [IN [OUT]]
 *   TYPE       q8_0 | q4_0 | q4_1 | q5_0 | q4_k | q6_k
 *   ref        (default) quantize_row_<type>_ref on each row: the scalar reference quantizer
 *   chunk      ggml_quantize_chunk(type, ..., imatrix = NULL): what llama-quantize calls
 *   dequant    input is quantized rows of TYPE; output is f32 via ggml's to_float
 * --weights FILE  (chunk mode only) N_PER_ROW little-endian f32 importance weights passed to
 *            ggml_quantize_chunk as its imatrix: what llama-quantize --imatrix does per tensor
 * IN/OUT default to stdin/stdout ("-" also means stdin/stdout).
 * Exit status: 0 ok, 2 usage or input error (message on stderr).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"

/* Exported by libggml-base (ggml/src/ggml-quants.h, GGML_API); declared here with void * blocks
 * so the harness needs only the public include directory. The block layout is ggml's. */
void quantize_row_q8_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_1_ref(const float *x, void *y, int64_t k);
void quantize_row_q5_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_K_ref(const float *x, void *y, int64_t k);
void quantize_row_q6_K_ref(const float *x, void *y, int64_t k);

typedef void (*ref_fn)(const float *, void *, int64_t);

struct qtype {
    const char *name;
    enum ggml_type type;
    ref_fn ref;
};

static const struct qtype QTYPES[] = {
    {"q8_0", GGML_TYPE_Q8_0, quantize_row_q8_0_ref},
    {"q4_0", GGML_TYPE_Q4_0, quantize_row_q4_0_ref},
    {"q4_1", GGML_TYPE_Q4_1, quantize_row_q4_1_ref},
    {"q5_0", GGML_TYPE_Q5_0, quantize_row_q5_0_ref},
    {"q4_k", GGML_TYPE_Q4_K, quantize_row_q4_K_ref},
    {"q6_k", GGML_TYPE_Q6_K, quantize_row_q6_K_ref},
};

static int fail(const char *msg, const char *arg) {
    fprintf(stderr, "quant_harness: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* Read a whole stream into a malloc'd buffer; returns NULL on error. */
static unsigned char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                return NULL;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    const char *mode = "ref";
    const char *weights_path = NULL;
    const char *pos[4] = {0};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            mode = argv[++i];
        } else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) {
            weights_path = argv[++i];
        } else if (npos < 4) {
            pos[npos++] = argv[i];
        } else {
            return fail("too many arguments", argv[i]);
        }
    }
    if (npos < 2) {
        fprintf(stderr,
                "usage: quant_harness q8_0|q4_0|q4_1|q5_0|q4_k|q6_k N_PER_ROW "
                "[--mode ref|chunk|dequant] [--weights FILE] [IN [OUT]]\n");
        return 2;
    }
    const struct qtype *qt = NULL;
    for (size_t i = 0; i < sizeof QTYPES / sizeof QTYPES[0]; i++) {
        if (strcmp(pos[0], QTYPES[i].name) == 0) qt = &QTYPES[i];
    }
    if (!qt) return fail("unknown type", pos[0]);

    char *end = NULL;
    errno = 0;
    long long n_per_row = strtoll(pos[1], &end, 10);
    if (errno || *end || n_per_row <= 0) return fail("bad N_PER_ROW", pos[1]);
    int64_t blck = ggml_blck_size(qt->type);
    if (n_per_row % blck != 0) return fail("N_PER_ROW is not a multiple of the block size", pos[1]);

    int dequant = strcmp(mode, "dequant") == 0;
    if (!dequant && strcmp(mode, "ref") != 0 && strcmp(mode, "chunk") != 0) {
        return fail("unknown mode", mode);
    }
    float *weights = NULL;
    if (weights_path) {
        if (strcmp(mode, "chunk") != 0) return fail("--weights needs --mode chunk", NULL);
        FILE *wf = fopen(weights_path, "rb");
        if (!wf) return fail("cannot open weights", weights_path);
        size_t wlen = 0;
        unsigned char *wdata = read_all(wf, &wlen);
        fclose(wf);
        if (!wdata || wlen != (size_t)n_per_row * sizeof(float)) {
            return fail("weights file must hold exactly N_PER_ROW f32 values", weights_path);
        }
        weights = malloc(wlen);
        if (!weights) return fail("out of memory", NULL);
        memcpy(weights, wdata, wlen);
        free(wdata);
    }

    FILE *in = stdin, *out = stdout;
    if (npos > 2 && strcmp(pos[2], "-") != 0 && !(in = fopen(pos[2], "rb"))) {
        return fail("cannot open input", pos[2]);
    }
    if (npos > 3 && strcmp(pos[3], "-") != 0 && !(out = fopen(pos[3], "wb"))) {
        return fail("cannot open output", pos[3]);
    }

    size_t len = 0;
    unsigned char *data = read_all(in, &len);
    if (!data) return fail("cannot read input", npos > 2 ? pos[2] : "stdin");

    size_t qrow = ggml_row_size(qt->type, n_per_row);
    size_t frow = (size_t)n_per_row * sizeof(float);
    size_t in_row = dequant ? qrow : frow;
    if (len % in_row != 0) return fail("input length is not a whole number of rows", NULL);
    int64_t nrows = (int64_t)(len / in_row);
    size_t out_len = (size_t)nrows * (dequant ? frow : qrow);
    /* malloc'd buffers are aligned for float and for every ggml block type. */
    void *dst = malloc(out_len ? out_len : 1);
    float *src = malloc(len ? len : 1);
    if (!dst || !src) return fail("out of memory", NULL);
    memcpy(src, data, len); /* the read buffer is char-aligned only in principle: copy, never cast */
    free(data);

    if (dequant) {
        const struct ggml_type_traits *tr = ggml_get_type_traits(qt->type);
        for (int64_t r = 0; r < nrows; r++) {
            tr->to_float((const unsigned char *)src + r * qrow, (float *)dst + r * n_per_row, n_per_row);
        }
    } else if (strcmp(mode, "ref") == 0) {
        for (int64_t r = 0; r < nrows; r++) {
            qt->ref(src + r * n_per_row, (unsigned char *)dst + r * qrow, n_per_row);
        }
    } else {
        ggml_quantize_init(qt->type);
        size_t wrote = ggml_quantize_chunk(qt->type, src, dst, 0, nrows, n_per_row, weights);
        if (wrote != out_len) return fail("ggml_quantize_chunk wrote an unexpected size", NULL);
    }

    if (fwrite(dst, 1, out_len, out) != out_len || fflush(out) != 0) {
        return fail("cannot write output", npos > 3 ? pos[3] : "stdout");
    }
    free(src);
    free(dst);
    free(weights);
    return 0;
}
