"""Convert YOLO txt or Pascal VOC annotations to COCO JSON (what our configs read)."""
import argparse
import sys

from ppdet_ext.data import convert_voc, convert_yolo
from ppdet_ext.data.coco_writer import ConversionError

EXAMPLES = """examples:
  python tools/convert_dataset.py yolo --images data/images --labels data/labels \\
      --names data/classes.txt --out data/annotations/train.json
  python tools/convert_dataset.py voc --annotations VOC2012/Annotations \\
      --images VOC2012/JPEGImages --out voc/annotations/train.json
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="fmt", required=True)
    y = sub.add_parser("yolo", help="images/ + labels/*.txt (class cx cy w h, normalised)")
    y.add_argument("--images", required=True)
    y.add_argument("--labels", required=True)
    y.add_argument("--names", required=True, help="class names file, one per line")
    y.add_argument("--out", required=True)
    v = sub.add_parser("voc", help="Pascal VOC XML files")
    v.add_argument("--annotations", required=True)
    v.add_argument("--images", required=True)
    v.add_argument("--labels", default=None, help="class names file (default: sorted names found)")
    v.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        if args.fmt == "yolo":
            stats = convert_yolo.convert(args.images, args.labels,
                                         convert_yolo.read_names(args.names), args.out)
        else:
            labels = convert_yolo.read_names(args.labels) if args.labels else None
            stats = convert_voc.convert(args.annotations, args.images, args.out, labels)
    except (ConversionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {stats['images']} images, {stats['boxes']} boxes, "
          f"{stats['dropped']} degenerate boxes dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
