"""Make dataset/coco_mini/ (the embedded default) from ../shared/data/coco_val158.

Provenance script, kept so the slice can be re-made and audited: it takes the first
``--num`` images by COCO id (byte-identical JPEGs), keeps their official boxes (segmentation
dropped to keep the repo small), splits them train/val, and writes COCO JSON files that
keep each image's ``license`` id together with the COCO licence table.

    python scripts/vendor_coco_mini.py --src ../shared/data/coco_val158 --num 64 --val 16
"""
import argparse
import json
import os
import shutil

COCO_LICENSES = [
    {"id": 1, "name": "Attribution-NonCommercial-ShareAlike License",
     "url": "http://creativecommons.org/licenses/by-nc-sa/2.0/"},
    {"id": 2, "name": "Attribution-NonCommercial License",
     "url": "http://creativecommons.org/licenses/by-nc/2.0/"},
    {"id": 3, "name": "Attribution-NonCommercial-NoDerivs License",
     "url": "http://creativecommons.org/licenses/by-nc-nd/2.0/"},
    {"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"},
    {"id": 5, "name": "Attribution-ShareAlike License",
     "url": "http://creativecommons.org/licenses/by-sa/2.0/"},
    {"id": 6, "name": "Attribution-NoDerivs License",
     "url": "http://creativecommons.org/licenses/by-nd/2.0/"},
    {"id": 7, "name": "No known copyright restrictions", "url": "http://flickr.com/commons/usage/"},
    {"id": 8, "name": "United States Government Work", "url": "http://www.usa.gov/copyright.shtml"},
]


def _subset(coco, images):
    ids = {im["id"] for im in images}
    anns = []
    for ann in coco["annotations"]:
        if ann["image_id"] in ids:
            ann = {k: v for k, v in ann.items() if k != "segmentation"}
            anns.append(ann)
    return {"info": {"description": "coco_mini: a slice of COCO val2017 (see dataset/README.md)"},
            "licenses": COCO_LICENSES, "images": images, "annotations": anns,
            "categories": coco["categories"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default="../shared/data/coco_val158")
    ap.add_argument("--dst", default="dataset/coco_mini")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--val", type=int, default=16)
    args = ap.parse_args()
    with open(os.path.join(args.src, "annotations", "instances_val158.json")) as f:
        coco = json.load(f)
    images = sorted(coco["images"], key=lambda im: im["id"])[: args.num]
    val, train = images[: args.val], images[args.val:]
    os.makedirs(os.path.join(args.dst, "images"), exist_ok=True)
    os.makedirs(os.path.join(args.dst, "annotations"), exist_ok=True)
    for im in images:
        shutil.copyfile(os.path.join(args.src, "images", im["file_name"]),
                        os.path.join(args.dst, "images", im["file_name"]))
    for name, subset in (("train", train), ("val", val)):
        with open(os.path.join(args.dst, "annotations", f"instances_{name}.json"), "w") as f:
            json.dump(_subset(coco, subset), f)
        print(name, len(subset), "images")


if __name__ == "__main__":
    main()
