
#include <stdint.h>
#include <math.h>

#define FACE_BITS 20
#define EMPTY INT64_MAX

static inline float edgef(float ax, float ay, float bx, float by, float px, float py)
{
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}
static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline float min3(float a, float b, float c) { float m = a < b ? a : b; return m < c ? m : c; }
static inline float max3(float a, float b, float c) { float m = a > b ? a : b; return m > c ? m : c; }

/* Z-test the pixel centres ox0..ox1, oy0..oy1 (offsets from the box corner x0, y0) of one triangle;
   the float32 expressions of raster._raster_bucket in the same order. c: 3 corners (x, y, z). */
static void raster_triangle(const float *c, float x0, float y0, int64_t ox0, int64_t ox1, int64_t oy0, int64_t oy1,
                            int64_t base, int64_t f, int64_t W, int64_t *zbuf)
{
    const int jj[3] = {1, 2, 0}, ll[3] = {2, 0, 1};
    const float DEPTH_SCALE = 1048576.0f;            /* 2^20 */
    const float KEY_MAX = (float)((1LL << 42) - 1);
    float xa[3], ya[3], iz[3], A[3], Bc[3], C[3];
    for (int i = 0; i < 3; ++i) {
        xa[i] = c[i * 3 + 0] - (x0 + 0.5f);
        ya[i] = c[i * 3 + 1] - (y0 + 0.5f);
        iz[i] = 1.0f / c[i * 3 + 2];
    }
    for (int i = 0; i < 3; ++i) {
        const int j = jj[i], l = ll[i];
        A[i] = -(ya[l] - ya[j]);
        Bc[i] = xa[l] - xa[j];
        C[i] = -(xa[l] - xa[j]) * ya[j] + (ya[l] - ya[j]) * xa[j];
    }
    const float area = (C[0] + C[1]) + C[2];
    const float inv_area = 1.0f / area;
    const float sgn = area > 0.0f ? 1.0f : (area < 0.0f ? -1.0f : 0.0f);
    float cA[3], cB[3], cC[3], w[3];
    for (int i = 0; i < 3; ++i) {
        cA[i] = A[i] * sgn; cB[i] = Bc[i] * sgn; cC[i] = C[i] * sgn;
        w[i] = iz[i] * inv_area;
    }
    const float dA = (A[0] * w[0] + A[1] * w[1]) + A[2] * w[2];
    const float dB = (Bc[0] * w[0] + Bc[1] * w[1]) + Bc[2] * w[2];
    const float dC = (C[0] * w[0] + C[1] * w[1]) + C[2] * w[2];
    for (int64_t oy = oy0; oy <= oy1; ++oy) {
        const float fy = (float)oy;
        const int64_t row = base + ((int64_t)(y0 + fy)) * W;
        for (int64_t ox = ox0; ox <= ox1; ++ox) {
            const float fx = (float)ox;
            const float e0 = (cA[0] * fx + cB[0] * fy) + cC[0];
            const float e1 = (cA[1] * fx + cB[1] * fy) + cC[1];
            const float e2 = (cA[2] * fx + cB[2] * fy) + cC[2];
            if (!(e0 >= 0.0f && e1 >= 0.0f && e2 >= 0.0f)) continue;
            float v = (dA * fx + dB * fy) + dC;
            if (!(v >= 1e-12f)) v = 1e-12f;
            float d = (1.0f / v) * DEPTH_SCALE;
            if (!(d >= 0.0f)) d = 0.0f;
            if (d > KEY_MAX) d = KEY_MAX;
            const int64_t key = (((int64_t)d) << FACE_BITS) | f;
            int64_t *z = zbuf + row + (int64_t)(x0 + fx);
            if (key < *z) *z = key;
        }
    }
}

/* The whole of raster.rasterize for B meshes sharing faces (F, 3): culling, boxes, z-buffer, then
   face ids and (optionally) perspective-correct barycentrics and depth of the visible surface.
   verts (B, V, 3) float32; zbuf (B*H*W) int64 filled with EMPTY; outputs face (B*H*W) int64,
   bary (B*H*W*3) and depth (B*H*W) float32 (bary may be NULL when barycentrics == 0). */
void rasterize(const float *verts, int64_t B, int64_t V, const int64_t *faces, int64_t F, int64_t H, int64_t W,
               int cull, float near, int barycentrics, int64_t *zbuf, int64_t *face, float *bary, float *depth)
{
    const float fW = (float)W, fH = (float)H;
    for (int64_t b = 0; b < B; ++b) {
        const float *vb = verts + b * V * 3;
        for (int64_t f = 0; f < F; ++f) {
            float c[9];
            for (int k = 0; k < 3; ++k)
                for (int d = 0; d < 3; ++d) c[k * 3 + d] = vb[faces[f * 3 + k] * 3 + d];
            const float area = edgef(c[0], c[1], c[3], c[4], c[6], c[7]);
            if (!(min3(c[2], c[5], c[8]) > near && fabsf(area) > 1e-12f)) continue;
            if (cull && !(area < 0.0f)) continue;
            const float xlo = min3(c[0], c[3], c[6]), xhi = max3(c[0], c[3], c[6]);
            const float ylo = min3(c[1], c[4], c[7]), yhi = max3(c[1], c[4], c[7]);
            if (!(xhi >= 0.0f && xlo <= fW && yhi >= 0.0f && ylo <= fH)) continue;
            /* the box's corner (x0, y0): the origin of the edge functions, as in the torch path */
            const float x0 = clampf(floorf(xlo - 0.5f), 0.0f, fW - 1.0f), y0 = clampf(floorf(ylo - 0.5f), 0.0f, fH - 1.0f);
            /* the pixel centres inside the triangle's bounds: none -> nothing to test */
            const float tx0 = clampf(ceilf(xlo - 0.5f), 0.0f, fW - 1.0f), tx1 = clampf(floorf(xhi - 0.5f), 0.0f, fW - 1.0f);
            const float ty0 = clampf(ceilf(ylo - 0.5f), 0.0f, fH - 1.0f), ty1 = clampf(floorf(yhi - 0.5f), 0.0f, fH - 1.0f);
            if (tx0 > tx1 || ty0 > ty1) continue;
            raster_triangle(c, x0, y0, (int64_t)(tx0 - x0), (int64_t)(tx1 - x0), (int64_t)(ty0 - y0), (int64_t)(ty1 - y0),
                            b * H * W, f, W, zbuf);
        }
    }
    const int64_t n = B * H * W;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t key = zbuf[i];
        if (key == EMPTY) {
            face[i] = -1;
            depth[i] = 0.0f;
            if (barycentrics) bary[i * 3] = bary[i * 3 + 1] = bary[i * 3 + 2] = 0.0f;
            continue;
        }
        const int64_t f = key & ((1LL << FACE_BITS) - 1);
        face[i] = f;
        if (!barycentrics) { depth[i] = (float)(key >> FACE_BITS) / 1048576.0f; continue; }
        const int64_t b = i / (H * W), yx = i % (H * W);
        const float py = (float)(yx / W) + 0.5f, px = (float)(yx % W) + 0.5f;
        const float *vb = verts + b * V * 3;
        const float *p0 = vb + faces[f * 3] * 3, *p1 = vb + faces[f * 3 + 1] * 3, *p2 = vb + faces[f * 3 + 2] * 3;
        float w0 = edgef(p1[0], p1[1], p2[0], p2[1], px, py);
        float w1 = edgef(p2[0], p2[1], p0[0], p0[1], px, py);
        float w2 = edgef(p0[0], p0[1], p1[0], p1[1], px, py);
        const float s = (w0 + w1) + w2;
        w0 = w0 / s; w1 = w1 / s; w2 = w2 / s;
        const float q0 = w0 / (p0[2] > near ? p0[2] : near);
        const float q1 = w1 / (p1[2] > near ? p1[2] : near);
        const float q2 = w2 / (p2[2] > near ? p2[2] : near);
        const float den = (q0 + q1) + q2;
        bary[i * 3] = q0 / den; bary[i * 3 + 1] = q1 / den; bary[i * 3 + 2] = q2 / den;
        depth[i] = 1.0f / den;
    }
}

/* Attributes at P listed pixels: out[p, :] = sum_k attrs[img(p), corners[face(p), k], :] * bary(p, k).
   pix (P) flat pixel indices b*H*W + y*W + x of covered pixels; face (B*H*W) int64; bary (B*H*W*3);
   attrs (N, C) shared (batched == 0) or (B, N, C); corners (F, 3) int64; out (P, C). */
void interpolate_at(const int64_t *pix, int64_t P, const int64_t *face, const float *bary, int64_t HW,
                    const float *attrs, int batched, int64_t N, int64_t C, const int64_t *corners, float *out)
{
    for (int64_t p = 0; p < P; ++p) {
        const int64_t i = pix[p];
        const int64_t f = face[i] < 0 ? 0 : face[i];
        const float *a = attrs + (batched ? (i / HW) * N * C : 0);
        const float *a0 = a + corners[f * 3] * C, *a1 = a + corners[f * 3 + 1] * C, *a2 = a + corners[f * 3 + 2] * C;
        const float b0 = bary[i * 3], b1 = bary[i * 3 + 1], b2 = bary[i * 3 + 2];
        const float m = face[i] >= 0 ? 1.0f : 0.0f;
        float *o = out + p * C;
        for (int64_t c = 0; c < C; ++c) o[c] = ((a0[c] * b0 + a1[c] * b1) + a2[c] * b2) * m;
    }
}

/* Area-weighted vertex normals (not normalised): for each of B meshes, the cross product of every
   face's edges added to its three corners, faces in order (as torch index_add_ does). */
void vertex_normals(const float *verts, int64_t B, int64_t V, const int64_t *faces, int64_t F, float *out)
{
    for (int64_t i = 0; i < B * V * 3; ++i) out[i] = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
        const float *vb = verts + b * V * 3;
        float *ob = out + b * V * 3;
        for (int64_t f = 0; f < F; ++f) {
            const float *p0 = vb + faces[f * 3] * 3, *p1 = vb + faces[f * 3 + 1] * 3, *p2 = vb + faces[f * 3 + 2] * 3;
            const float ax = p1[0] - p0[0], ay = p1[1] - p0[1], az = p1[2] - p0[2];
            const float bx = p2[0] - p0[0], by = p2[1] - p0[1], bz = p2[2] - p0[2];
            const float nx = ay * bz - az * by, ny = az * bx - ax * bz, nz = ax * by - ay * bx;
            for (int k = 0; k < 3; ++k) {
                float *o = ob + faces[f * 3 + k] * 3;
                o[0] += nx; o[1] += ny; o[2] += nz;
            }
        }
    }
}

/* Bilinear texture lookup at P points (grid_sample, align_corners=False, border padding):
   tex (U, T, T, C) channels-last; which (P) texture index; grid (P, 2) in [-1, 1]; out (P, C). */
void sample_texture(const float *tex, int64_t Th, int64_t Tw, int64_t C, const int64_t *which,
                    const float *grid, int64_t P, float *out)
{
    for (int64_t p = 0; p < P; ++p) {
        float x = ((grid[p * 2] + 1.0f) * (float)Tw - 1.0f) / 2.0f;
        float y = ((grid[p * 2 + 1] + 1.0f) * (float)Th - 1.0f) / 2.0f;
        x = clampf(x, 0.0f, (float)(Tw - 1));
        y = clampf(y, 0.0f, (float)(Th - 1));
        const float fx0 = floorf(x), fy0 = floorf(y);
        const float tx = x - fx0, ty = y - fy0;
        const int64_t x0 = (int64_t)fx0, y0 = (int64_t)fy0;
        const int64_t x1 = x0 + 1 < Tw - 1 ? x0 + 1 : Tw - 1, y1 = y0 + 1 < Th - 1 ? y0 + 1 : Th - 1;
        const float *t = tex + which[p] * Th * Tw * C;
        const float *a = t + (y0 * Tw + x0) * C, *b = t + (y0 * Tw + x1) * C;
        const float *c = t + (y1 * Tw + x0) * C, *d = t + (y1 * Tw + x1) * C;
        float *o = out + p * C;
        for (int64_t k = 0; k < C; ++k)
            o[k] = (a[k] * (1.0f - tx) + b[k] * tx) * (1.0f - ty) + (c[k] * (1.0f - tx) + d[k] * tx) * ty;
    }
}

/* Silhouette anti-aliasing: where the 3x3 neighbourhood (in bounds) of a pixel mixes covered and
   uncovered pixels, out = 0.5 * img + 0.5 * (mean of that neighbourhood); elsewhere out = img.
   img, out (B, H, W, C) float32; mask (B, H, W) uint8. */
void edge_aa(const float *img, const uint8_t *mask, int64_t B, int64_t H, int64_t W, int64_t C, float *out)
{
    for (int64_t b = 0; b < B; ++b)
        for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x) {
                const int64_t i = (b * H + y) * W + x;
                const uint8_t own = mask[i];
                int edge = 0;
                for (int64_t dy = -1; dy <= 1 && !edge; ++dy)
                    for (int64_t dx = -1; dx <= 1; ++dx) {
                        const int64_t yy = y + dy, xx = x + dx;
                        if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                        if (mask[(b * H + yy) * W + xx] != own) { edge = 1; break; }
                    }
                if (!edge) { for (int64_t c = 0; c < C; ++c) out[i * C + c] = img[i * C + c]; continue; }
                for (int64_t c = 0; c < C; ++c) {
                    float s = 0.0f, n = 0.0f;
                    for (int64_t dy = -1; dy <= 1; ++dy)
                        for (int64_t dx = -1; dx <= 1; ++dx) {
                            const int64_t yy = y + dy, xx = x + dx;
                            if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                            s += img[((b * H + yy) * W + xx) * C + c];
                            n += 1.0f;
                        }
                    out[i * C + c] = 0.5f * img[i * C + c] + 0.5f * (s / n);
                }
            }
}

/* ---- lighting: shading.light_pixels, the same float32 expressions in the same order ---- */

static inline float dot3f(const float *a, const float *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
static inline void unit3(const float *x, float *out)
{
    float n = (float)sqrt((double)dot3f(x, x));
    if (!(n >= 1e-12f)) n = 1e-12f;
    out[0] = x[0] / n; out[1] = x[1] / n; out[2] = x[2] / n;
}
/* x^k by repeated squaring: the powers x^(2^i) of k's set bits, multiplied from the highest down */
static inline float pow_int(float x, int k)
{
    float powers[16], p = x;
    int np = 0;
    for (int i = 0; (k >> i) != 0; ++i) {
        if (i) p = p * p;
        if ((k >> i) & 1) powers[np++] = p;
    }
    float out = powers[np - 1];
    for (int j = np - 2; j >= 0; --j) out = out * powers[j];
    return out;
}
static inline float maxf(float a, float b) { return a < b ? b : a; }

/* P covered pixels: normal, position, albedo (P, 3); occlusion, specular, shadow, ndl_raw (P);
   flags (P) uint8 (1 skin, 2 eye, 4 teeth); bsel (P) image index; table (B, 24) per-image light
   (shading.LIGHT_COLUMNS). Outputs lin (P, 3), lum (P), shadow_out (P), half (P, 3). any_flash: some
   image of the batch has a flash (the torch path adds the flash terms only then). */
void light_pixels(int64_t P, const float *normal, const float *position, const float *occlusion, const float *albedo,
                  const float *specular, const float *shadow, const float *ndl_raw, const uint8_t *flags,
                  const int64_t *bsel, const float *table, int any_flash, float *lin, float *lum, float *shadow_out,
                  float *half)
{
    const float wrap[3] = {0.45f, 0.22f, 0.15f};
    for (int64_t p = 0; p < P; ++p) {
        const float *t = table + bsel[p] * 24;
        const float *n = normal + p * 3, *pos = position + p * 3, *alb = albedo + p * 3;
        const float *ldir = t + 11, *col = t + 14, *cam = t + 20;
        const float ambient = t[10], inten = t[17], specf = t[18], flash = t[19];
        const int skin = flags[p] & 1, eye = flags[p] & 2, teeth = flags[p] & 4;
        const float nx = n[0], ny = n[1], nz = n[2], occ = occlusion[p], nr = ndl_raw[p];
        const float sh_val = t[0] * 0.2f + t[1] * nx + t[2] * (ny + 0.5f) + t[3] * nz
            + 0.5f * (t[4] * nx * ny + t[5] * ny * nz + t[6] * nx * nz + t[7] * (nx * nx - ny * ny)
                      + t[8] * (3.0f * nz * nz - 1.0f));
        float amb = ambient * clampf(1.0f + t[9] * sh_val, 0.15f, 2.0f) * (0.75f + 0.25f * clampf(ny, -1.0f, 1.0f));
        amb = amb * clampf(occ, 0.05f, 1.0f);
        const float ndl = maxf(nr, 0.0f);
        float ndl3[3];
        for (int k = 0; k < 3; ++k) ndl3[k] = skin ? maxf((nr + wrap[k]) / (1.0f + wrap[k]), 0.0f) : ndl;
        float sh = shadow[p];
        if (skin && t[23] > 0.0f) sh = sh * 0.85f + 0.15f * (ndl > 0.0f ? 1.0f : 0.0f);
        if (teeth) sh = maxf(sh, 0.6f);
        const float crease = 0.4f + 0.6f * clampf(occ, 0.0f, 1.0f);
        float irr[3];
        const float diff = inten * sh * crease;
        for (int k = 0; k < 3; ++k) irr[k] = (amb + diff * ndl3[k]) * col[k];
        float d[3] = {cam[0] - pos[0], cam[1] - pos[1], cam[2] - pos[2]}, view[3], h[3];
        unit3(d, view);
        const float ndv = maxf(dot3f(n, view), 0.0f);
        if (any_flash) {
            const float f = flash * ndv * crease;
            for (int k = 0; k < 3; ++k) irr[k] = irr[k] + f;
        }
        const float lv[3] = {ldir[0] + view[0], ldir[1] + view[1], ldir[2] + view[2]};
        unit3(lv, h);
        const float ndh = maxf(dot3f(n, h), 0.0f);
        float spec = specf * specular[p] * inten * sh * pow_int(ndh, 24);
        if (eye) {
            const float key = pow_int(ndh, 250) * inten * sh;
            const float vu[3] = {view[0] + 0.0f, view[1] + 0.6f, view[2] + 0.0f};
            float e1[3], e2[3];
            unit3(vu, e1);
            const float ev[3] = {e1[0] + view[0], e1[1] + view[1], e1[2] + view[2]};
            unit3(ev, e2);
            const float env = pow_int(maxf(dot3f(n, e2), 0.0f), 120) * ambient;
            float c = 1.6f * key + 0.8f * env;
            if (any_flash) c = c + 1.6f * pow_int(ndv, 250) * flash;
            spec = c;
        }
        float *o = lin + p * 3;
        for (int k = 0; k < 3; ++k) o[k] = alb[k] * irr[k] + spec * col[k];
        if (any_flash) {
            const float fh = specf * specular[p] * flash * pow_int(ndv, 24);
            for (int k = 0; k < 3; ++k) o[k] = o[k] + fh;
        }
        lum[p] = (irr[0] + irr[1] + irr[2]) / 3.0f;
        shadow_out[p] = sh;
        half[p * 3] = h[0]; half[p * 3 + 1] = h[1]; half[p * 3 + 2] = h[2];
    }
}
