"""A few optimizer steps of a pretraining model, for the tests that check a loss falls."""

import torch


def step_losses(model, optimizer, steps, batch) -> list:
    """The loss of each of ``steps`` steps; ``batch()`` returns one step's positional inputs
    of ``model`` (called with ``epoch=1``), whose output holds ``"loss"``."""
    losses = []
    for _ in range(steps):
        loss = model(*batch(), epoch=1)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
