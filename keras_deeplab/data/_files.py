"""Reading image files in tf.data with errors that name the file.

TensorFlow's decoders fail on a truncated or mislabelled file with a message that does not
say which file it was. `read_image_file` checks the bytes first (known signature; PNG files
must end with their IEND chunk, which a truncated download lacks) and fails with the path
and the fix.
"""

import tensorflow as tf

_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG = b"\xff\xd8\xff"
_SIGNATURES = (_PNG, _JPEG, b"BM", b"GIF8")


def read_image_file(path, what="image"):
    """The bytes of a PNG / JPEG / BMP / GIF file, after checks that name ``path``."""
    data = tf.io.read_file(path)
    known = tf.reduce_any(tf.stack([tf.strings.substr(data, 0, len(sig)) == sig
                                    for sig in _SIGNATURES]))
    checks = [tf.debugging.assert_equal(known, True, message=tf.strings.join([
        f"{what} file ", path, " is empty or not a PNG/JPEG/BMP/GIF image (corrupt or "
        "mislabelled); re-extract or re-download it, or remove it from the dataset"]))]
    is_png = tf.strings.substr(data, 0, len(_PNG)) == _PNG
    length = tf.strings.length(data)
    tail = tf.strings.substr(data, tf.maximum(length - len(_PNG_END), 0), len(_PNG_END))
    complete = tf.logical_or(tf.logical_not(is_png), tail == _PNG_END)
    checks.append(tf.debugging.assert_equal(complete, True, message=tf.strings.join([
        f"{what} file ", path, " is a truncated PNG (no IEND chunk at its end); re-extract or "
        "re-download it, or remove it from the dataset"])))
    # The decoder must wait for the checks: otherwise its own (nameless) error can win the race.
    with tf.control_dependencies([c for c in checks if c is not None]):
        return tf.identity(data)
