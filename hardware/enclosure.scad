// SIPAS reference terminal: parametric enclosure (OpenSCAD 2021.01 or later).
// Vỏ hộp thiết bị đánh giá SIPAS: mọi kích thước là tham số.
//
// A wedge: low at the citizen's side, high at the official's side. The button panel slopes up AWAY
// from the citizen, so it faces the citizen's eyes, and its back edge carries a lip (hood) and the
// side cheeks rise with it: from across the desk the official sees the back wall, not the caps.
// Geometry and figures: hardware/README.md, "The enclosure / Vỏ hộp".
//
//   openscad -o shell.stl -D 'part="shell"' -D n_buttons=3 hardware/enclosure.scad
//   openscad -o base.stl  -D 'part="base"'  -D battery_bay=true hardware/enclosure.scad
//
// Axes: X left to right as the CITIZEN sees it (button 1 = level 1 at the left), Y from the citizen
// (y = 0, front) toward the official (back), Z up from the desk. Millimetres.

/* [Buttons / Nút] */
n_buttons = 3;          // 3 to 5, one per level of the rating scale
button_d = 60;          // outside diameter of the button's bezel (sets the spacing)
button_hole_d = 45;     // hole for the button's threaded body: MEASURE yours, add 0.5 mm
button_gap = 18;        // between two bezels
button_depth = 45;      // body + microswitch below the panel, along the button's axis
led_hole_d = 5.2;       // 5 mm LED above each button
label_strip_w = 14;     // recessed strip under the buttons for the printed labels / reasons

/* [Geometry / Hình dạng] */
panel_angle = 40;       // panel tilt from the desk, rising toward the official (degrees)
front_h = 35;           // height of the citizen-side edge
hood_h = 25;            // lip above the panel's back edge (and the cheeks' height there)
wall = 3;
side_margin = 12;       // between the outer buttons and the side walls
bay_w = 76;             // electronics bay at the right end (perfboard 70 x 50 with the DevKitC)

/* [Openings / Lỗ] */
usb_cutout = true;      // cable exit in the back wall
usb_cutout_w = 14;
usb_cutout_h = 9;
battery_bay = false;    // 18650 cell + TP4056 charger + power switch (battery-powered terminals)

/* [Sightline check / Kiểm tra tầm nhìn] */
official_eye_h = 420;   // seated official's eye above the desk
official_dist = 600;    // from the terminal's back edge to the official's eye, across the desk
citizen_eye_h = 420;    // seated citizen's eye above the desk
citizen_dist = 350;     // from the terminal's front edge to the citizen's eye
cap_h = 18;             // how far a button cap stands proud of the panel

/* [Output] */
part = "assembled";     // "shell", "base" or "assembled"
$fn = 64;

// -- derived ---------------------------------------------------------------------------------------
assert(n_buttons >= 3 && n_buttons <= 5, "n_buttons must be 3, 4 or 5");
assert(panel_angle >= 15 && panel_angle <= 65, "panel_angle must be between 15 and 65 degrees");
pitch = button_d + button_gap;
width = 2 * wall + 2 * side_margin + n_buttons * pitch + bay_w;
u_label = 4 + label_strip_w / 2;                        // distances along the panel slope
u_button = 4 + label_strip_w + 6 + button_d / 2;
u_led = u_button + button_d / 2 + 8;
panel_len = u_led + 10;
depth = panel_len * cos(panel_angle);
back_h = front_h + panel_len * sin(panel_angle);
top_h = back_h + hood_h;
base_t = 3;
clear = 0.4;                                            // fit between base plate and shell
boss_d = 9;
boss_h = 12;

function panel_z(y) = front_h + y * tan(panel_angle);
function on_panel(u) = [0, u * cos(panel_angle), front_h + u * sin(panel_angle)];
function button_x(i) = wall + side_margin + pitch * (i + 0.5);
bay_x0 = wall + side_margin + n_buttons * pitch;
boss_in = wall + boss_d / 2 - 1;                        // bosses merge into the walls
boss_xy = [
    [boss_in, boss_in], [width - boss_in, boss_in],
    [boss_in, depth - boss_in], [width - boss_in, depth - boss_in],
];
// the USB cable enters at the DevKitC (mains) or at the charger (battery)
charger_x = button_x(0) + pitch / 2;
usb_x = battery_bay ? charger_x : bay_x0 + bay_w / 2;

// -- the figures (read by tests/unit/test_hardware_enclosure.py) -----------------------------------
// A cap top is hidden from an eye behind the terminal when the line from it to the eye passes
// below the top of the hood. The front-most point of the front cap is the one a tall onlooker
// sees first; the eye height at which it appears over the hood is reported.
cap_top = on_panel(u_button - button_d / 2) + [0, -cap_h * sin(panel_angle), cap_h * cos(panel_angle)];
sight_slope = (top_h - cap_top[2]) / (depth - cap_top[1]);
official_sees_caps_above = top_h + sight_slope * official_dist;
// angle between the panel's normal and the line to the citizen's eye (0 = square on)
button_c = on_panel(u_button);
citizen_elev = atan2(citizen_eye_h - button_c[2], citizen_dist + button_c[1]);
citizen_view_off = abs((90 - panel_angle) - citizen_elev);
// lowest point of a button body (axis perpendicular to the panel)
body_bottom = button_c[2] - button_depth * cos(panel_angle) - (button_hole_d / 2) * sin(panel_angle);

echo(str("SIPAS width_mm=", width));
echo(str("SIPAS depth_mm=", depth));
echo(str("SIPAS height_mm=", top_h));
echo(str("SIPAS panel_angle_deg=", panel_angle));
echo(str("SIPAS official_sees_caps_above_mm=", official_sees_caps_above));
echo(str("SIPAS official_eye_mm=", official_eye_h));
echo(str("SIPAS citizen_view_off_deg=", citizen_view_off));
echo(str("SIPAS body_clearance_mm=", body_bottom - base_t));
if (official_sees_caps_above <= official_eye_h)
    echo(str("WARNING: the official (eye ", official_eye_h, " mm) can see the caps: raise hood_h or panel_angle"));
if (body_bottom - base_t < 2)
    echo("WARNING: the button bodies touch the base plate: raise front_h");
if (width > 220)
    echo(str("NOTE: ", width, " mm wide: more than a 220 mm print bed; print on a larger bed, or cut the shell from 3 mm acrylic/plywood"));

// -- the shell --------------------------------------------------------------------------------------
module profile_extrude(pts, x0, x1) {
    // extrude a (y, z) polygon along X from x0 to x1
    translate([x0, 0, 0]) rotate([90, 0, 90]) linear_extrude(x1 - x0) polygon(pts);
}

module on_panel_at(x, u) {
    translate([x, 0, 0] + on_panel(u)) rotate([panel_angle, 0, 0]) children();
}

module shell() {
    difference() {
        union() {
            difference() {
                // solid wedge up to the cheeks' top line
                profile_extrude([[0, 0], [depth, 0], [depth, top_h], [0, front_h]], 0, width);
                // the well above the panel, between the cheeks
                profile_extrude(
                    [[-1, panel_z(-1)], [depth - wall, panel_z(depth - wall)], [depth - wall, top_h + 1], [-1, top_h + 1]],
                    wall, width - wall);
                // hollow inside, open at the bottom for the base plate
                t = wall / cos(panel_angle);
                profile_extrude(
                    [[wall, -1], [depth - wall, -1], [depth - wall, panel_z(depth - wall) - t], [wall, panel_z(wall) - t]],
                    wall, width - wall);
            }
            // screw bosses for the base plate (M3 self-tapping)
            for (p = boss_xy) translate([p[0], p[1], base_t]) cylinder(d = boss_d, h = boss_h);
        }
        for (p = boss_xy) translate([p[0], p[1], base_t - 1]) cylinder(d = 2.6, h = boss_h - 2);
        for (i = [0 : n_buttons - 1]) {
            on_panel_at(button_x(i), u_button) cylinder(d = button_hole_d, h = 4 * wall, center = true);
            on_panel_at(button_x(i), u_led) cylinder(d = led_hole_d, h = 4 * wall, center = true);
        }
        // recessed label strip (0.6 mm) across the button row
        on_panel_at(wall + side_margin, u_label) translate([0, -label_strip_w / 2, -0.6])
            cube([n_buttons * pitch, label_strip_w, 1]);
        if (usb_cutout)
            translate([usb_x - usb_cutout_w / 2, depth - wall - 1, base_t + 4]) cube([usb_cutout_w, wall + 2, usb_cutout_h]);
        if (battery_bay)  // SS12D00-class slide switch beside the USB opening
            translate([usb_x + usb_cutout_w / 2 + 8, depth - wall - 1, base_t + 6]) cube([9, wall + 2, 4.5]);
    }
}

// -- the base plate ---------------------------------------------------------------------------------
module standoff(h, d = 6, hole = 2.5) {
    difference() { cylinder(d = d, h = h); translate([0, 0, -1]) cylinder(d = hole, h = h + 2); }
}

module frame(w, d, h = 3, t = 1.6) {
    difference() { cube([w + 2 * t, d + 2 * t, h]); translate([t, t, -1]) cube([w, d, h + 2]); }
}

module base() {
    inner_w = width - 2 * wall - 2 * clear;
    inner_d = depth - 2 * wall - 2 * clear;
    translate([wall + clear, wall + clear, 0]) difference() {
        cube([inner_w, inner_d, base_t]);
        // rubber-foot recesses underneath
        for (x = [10, inner_w - 10], y = [10, inner_d - 10]) translate([x, y, -0.01]) cylinder(d = 10.5, h = 0.8);
        // screw holes under the shell's bosses
        for (p = boss_xy) translate([p[0] - wall - clear, p[1] - wall - clear, -1]) cylinder(d = 3.4, h = base_t + 2);
    }
    // perfboard (70 x 50, holes 66 x 46) carrying the DevKitC, in the electronics bay, USB to the back
    px = bay_x0 + (bay_w - 66) / 2;
    py = depth - wall - 4 - 46 - 2;
    for (dx = [0, 66], dy = [0, 46]) translate([px + dx, py + dy, base_t]) standoff(5);
    if (battery_bay) {
        // 18650 holder (78 x 21) under the front edge, TP4056 module (26 x 17) at the back wall
        translate([button_x(0) - 10, wall + 2, base_t]) frame(78, 21);
        translate([charger_x - 17 / 2 - 1.6, depth - wall - clear - 26 - 3.2, base_t]) frame(17, 26);
    }
}

if (part == "shell") shell();
else if (part == "base") base();
else { shell(); base(); }
