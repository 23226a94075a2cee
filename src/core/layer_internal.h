/*
 * layer_internal.h — hooks into a layer for other parts of the core (the checkpoint loader's
 * public functions): a layer can own an extra object released when the layer is freed (the
 * decoded weights of a checkpoint layer, and the reference on its file mappings).
 */
#ifndef W4A8MOE_LAYER_INTERNAL_H
#define W4A8MOE_LAYER_INTERNAL_H

#include "w4a8moe.h"

/* Hands `owner` to the layer: release(owner) runs when the layer is freed (after its
 * backends released their state). At most one owner per layer; returns -1 if one is set. */
int w4a8moe_layer_attach_owner(w4a8moe_layer *layer, void (*release)(void *), void *owner);

#endif /* W4A8MOE_LAYER_INTERNAL_H */
