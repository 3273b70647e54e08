"""Models: the torchvision-layout ResNet, the two-stream encoder, CMAlign and the LbA heads."""
