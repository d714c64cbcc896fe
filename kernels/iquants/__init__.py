"""Grid-based i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, bit-exact with ggml.

One module per grid family (`iq2`, `iq3`, `iq1`), each registering its types from a table of
per-type row drivers; `_common` holds the searches they share, `.._iq_grids` the grid data.
Quantizers follow `quantize_row_<type>_impl` in ggml-quants.c: per group of 8 (or 4) values a
lattice point is searched on the type's grid, with ggml's neighbour tables for the points off the
grid. Arithmetic is float32 in the C order (ints converted to float32 first), no fastmath, no
FMA. Dequantizers follow `dequantize_row_<type>`; dot products against Q8_K activations follow
`ggml_vec_dot_<type>_q8_K_generic`.

Speed without changing a single float: ggml's hot loops are latency-bound scalar chains, so
the work is regrouped where C's order allows it. A neighbour list is scored in SIMD lanes (one
point per lane, its sum over coordinates in C's order); the per-value level rounding of a scale
trial is one vector loop; IQ1's split-point search computes the terms that depend on one split
only once, fills each row of candidates in a vector pass and scans them in C's order only when
one can beat the best so far; its stable sort is a rank count.
"""
