from fakehub.fixtures import fake_hub, second_hub

__all__ = ["fake_hub", "second_hub"]
