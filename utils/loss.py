"""YOLOv5 v6.1 training loss: CIoU box loss, BCE objectness and BCE class loss with neighbour-cell targets."""

import torch
import torch.nn as nn

from utils.metrics import bbox_iou
from utils.torch_utils import de_parallel

REQUIRED_HYP = ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")


def smooth_BCE(eps=0.1):
    """Label-smoothed BCE targets (positive, negative) = (1 - eps/2, eps/2)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) wrapped around an elementwise BCEWithLogitsLoss."""

    def __init__(self, loss_fcn, gamma=1.5, alpha=0.25):
        """Wrap loss_fcn (its reduction is applied after focal weighting)."""
        super().__init__()
        self.loss_fcn = loss_fcn
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"

    def forward(self, pred, true):
        """Focal-weighted loss of logits pred against targets true."""
        loss = self.loss_fcn(pred, true)
        prob = torch.sigmoid(pred)
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        loss = loss * alpha_factor * (1.0 - p_t) ** self.gamma
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


# (dx, dy) cell offsets times g=0.5: own cell, then left, top, right, bottom neighbours
_NEIGHBOUR_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


class ComputeLoss:
    """Callable YOLOv5 loss: compute_loss(preds, targets) -> (loss * batch_size, [lbox, lobj, lcls])."""

    def __init__(self, model, autobalance=False):
        """Read hyps (model.hyp), objectness IoU ratio (model.gr) and anchors/strides from the Detect layer."""
        hyp = getattr(model, "hyp", None) or getattr(de_parallel(model), "hyp", None)
        missing = [k for k in REQUIRED_HYP if not isinstance(hyp, dict) or k not in hyp]
        if missing:
            raise ValueError(f"utils/loss.py ComputeLoss: model.hyp lacks {missing}; set model.hyp from a hyp yaml")
        det = de_parallel(model).model[-1]
        self.hyp = hyp
        self.gr = getattr(model, "gr", 1.0)
        self.na, self.nc, self.nl = det.na, det.nc, det.nl
        self.anchors = det.anchors  # (nl, na, 2) in grid units
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        self.ssi = [int(s) for s in det.stride].index(16) if autobalance else 0
        self.autobalance = autobalance
        self.cp, self.cn = smooth_BCE(eps=hyp.get("label_smoothing", 0.0))
        self.bce_cls = self._bce(hyp["cls_pw"])
        self.bce_obj = self._bce(hyp["obj_pw"])

    def _bce(self, pos_weight):
        """BCEWithLogitsLoss with pos_weight, focal-wrapped when hyp fl_gamma > 0."""
        loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(pos_weight)]))
        return FocalLoss(loss, self.hyp["fl_gamma"]) if self.hyp["fl_gamma"] > 0 else loss

    def __call__(self, preds, targets):
        """Loss of raw per-level maps preds [(bs, na, ny, nx, no)] against targets (nt, 6) [img, cls, xywh]."""
        device = preds[0].device
        self.bce_cls.to(device)
        self.bce_obj.to(device)
        lbox, lobj, lcls = (torch.zeros(1, device=device) for _ in range(3))
        for i, (pi, (tcls, tbox, idx, anch)) in enumerate(zip(preds, self.build_targets(preds, targets))):
            tobj = torch.zeros_like(pi[..., 0])
            if idx[0].shape[0]:
                ps = pi[idx]
                iou = self._box_iou(ps, tbox, anch)
                lbox = lbox + (1.0 - iou).mean()
                tobj[idx] = (1.0 - self.gr) + self.gr * iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    lcls = lcls + self._class_loss(ps[:, 5:], tcls)
            obji = self.bce_obj(pi[..., 4], tobj)
            lobj = lobj + obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()
        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox, lobj, lcls = lbox * self.hyp["box"], lobj * self.hyp["obj"], lcls * self.hyp["cls"]
        return (lbox + lobj + lcls) * preds[0].shape[0], torch.cat((lbox, lobj, lcls)).detach()

    @staticmethod
    def _box_iou(ps, tbox, anch):
        """CIoU between decoded predicted boxes (xy in cell, wh from anchors) and their xywh targets."""
        pxy = ps[:, :2].sigmoid() * 2 - 0.5
        pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anch
        return bbox_iou(torch.cat((pxy, pwh), 1), tbox, xywh=True, CIoU=True)

    def _class_loss(self, logits, tcls):
        """BCE of class logits against smoothed one-hot targets."""
        t = torch.full_like(logits, self.cn)
        t[torch.arange(len(tcls), device=logits.device), tcls] = self.cp
        return self.bce_cls(logits, t)

    def build_targets(self, preds, targets):
        """Per level: (classes, xywh box targets in cell units, (b, a, gj, gi) indices, anchors) of each positive."""
        targets = targets.to(device=preds[0].device, dtype=torch.float32)  # fp32 keeps cell assignment exact
        anchor_idx = torch.arange(self.na, device=targets.device, dtype=targets.dtype)
        anchor_idx = anchor_idx.view(self.na, 1).repeat(1, targets.shape[0])
        t_all = torch.cat((targets.repeat(self.na, 1, 1), anchor_idx[..., None]), 2)  # (na, nt, 7), anchor last
        return [self._level_targets(t_all, self.anchors[i].to(targets), preds[i].shape) for i in range(self.nl)]

    def _level_targets(self, t_all, anchors, shape):
        """Targets of one level with grid shape (bs, na, ny, nx, no): ratio filter, then own + two neighbour cells."""
        ny, nx = shape[2], shape[3]
        gain = torch.ones(7, device=t_all.device, dtype=t_all.dtype)
        gain[2:6] = torch.tensor([nx, ny, nx, ny], device=t_all.device, dtype=t_all.dtype)
        t = t_all * gain
        r = t[..., 4:6] / anchors[:, None]
        t = t[torch.max(r, 1 / r).max(2)[0] < self.hyp["anchor_t"]]
        gxy = t[:, 2:4]
        gxi = gain[2:4] - gxy
        left_top = ((gxy % 1 < 0.5) & (gxy > 1)).T
        right_bottom = ((gxi % 1 < 0.5) & (gxi > 1)).T
        use = torch.stack((torch.ones_like(left_top[0]), *left_top, *right_bottom))  # (5, n)
        offsets = (torch.zeros_like(gxy)[None] + _NEIGHBOUR_OFFSETS.to(gxy)[:, None])[use]
        t = t.repeat((5, 1, 1))[use]
        b, c = t[:, :2].long().T
        gxy, gwh = t[:, 2:4], t[:, 4:6]
        gij = (gxy - offsets).long()
        gij = torch.stack((gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)), 1)
        gi, gj = gij.T
        a = t[:, 6].long()
        return c, torch.cat((gxy - gij, gwh), 1), (b, a, gj, gi), anchors[a]
