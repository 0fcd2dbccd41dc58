/* moda — command-line tool (placeholder). */
#include <stdio.h>
int main(void)
{
    puts("moda " MODA_VERSION);
    return 0;
}
