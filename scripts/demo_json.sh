# Sourced by the demo scripts: field NAME JSON prints a number or string value from a demo's one-line JSON.
field() {
  sed -n "s/.*\"$1\": \"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$2"
}
