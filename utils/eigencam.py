"""EigenCAM for YOLOv5 feature maps: grad-cam's EigenCAM with a fast, sign-fixed first principal component."""

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM


class OrientedEigenCAM(EigenCAM):
    """EigenCAM (Muhammad & Yeasin, 2020): each cell's activations projected on their first principal component.

    Differs from the library's EigenCAM in three ways (docs/heatmaps.md): the component comes from the c x c scatter
    matrix, not a full SVD whose (h w) x (h w) factor takes seconds per map at 640; its sign is fixed (the SVD's is
    arbitrary and half the maps came out inverted); and the negative side is kept, not clipped to 0."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        return np.stack([principal_projection(a) for a in activations])


def principal_projection(a):
    """(c, h, w) activations -> (h, w) projection on their first principal component, shifted to min 0.

    The sign of a principal component is arbitrary; it is chosen so that the projection grows with the activation
    norm of the cell (strongly activated cells are hot). The whole signed range is kept (no ReLU)."""
    x = torch.from_numpy(np.nan_to_num(a.reshape(a.shape[0], -1).T)).double()
    xc = x - x.mean(0)
    p = xc @ torch.linalg.eigh(xc.T @ xc)[1][:, -1]  # eigenvectors of the c x c scatter matrix, largest last
    if p @ x.norm(dim=1) < 0:
        p = -p
    return (p - p.min()).reshape(a.shape[1:]).float().numpy()
