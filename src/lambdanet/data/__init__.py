"""Data: readers for itsacat h5, .npz and image folders (:mod:`.readers`), safe image decoding and
resizing (:mod:`.images`)."""
